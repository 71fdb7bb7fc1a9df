"""Transport security (SPEC OPS-6): the deployment CA and per-server certificates
(`ca`), and the TLS contexts built from them (`tlsconf`)."""
