"""Encryption: the only importer of `cryptography`."""
