"""Trimaran: a SIP unified-communications server built for high availability and
disaster recovery."""

__version__ = "0.2.0"
