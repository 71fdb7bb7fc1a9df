"""Running a topology on this machine: run directories, server processes, supervision."""
