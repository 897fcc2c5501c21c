"""Authentication/authorization (acl.py) and the per-protocol resource mapping; see docs/security.md."""
