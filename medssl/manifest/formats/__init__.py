"""manifest/formats."""
