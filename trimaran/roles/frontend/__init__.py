"""The Front End role: registrar, presence, IM and call routing for the users of a pool."""
