"""The Persistent Chat server role (SPEC PC-1..PC-4): the chat servers of a chat pool,
their SIP side and their HTTP API for history, search and room management."""
