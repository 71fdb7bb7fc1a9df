"""The dns role: an authoritative DNS server for the deployment\x27s SIP domain."""
