"""The database: connections, SQL blocks, the schema and catalog, claims, results and failures."""
