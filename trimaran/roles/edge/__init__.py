"""The Edge role (SPEC EDGE-1..EDGE-5): remote users and federated partners in, with
no internal address out."""
