"""Reports: one JSON document (schema in ``report.schema.json``) and one HTML page."""
