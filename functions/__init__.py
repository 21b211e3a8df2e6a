"""Dandelion's functions: each module here is one functions-framework target (`predict`,
`ingest_one_url`) and only wires its routes; the library they and the workflow steps share is in
`functions.lib`."""
