"""Storage: results folders, the files users give, provenance and tracking."""
