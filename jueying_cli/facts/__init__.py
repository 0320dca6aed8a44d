"""The facts contract: `schema` (version and key names; Python 3.8, standard library only, shipped to nodes
with the probe) and the typed, validated model the controller reads documents into and writes them back from:
`model` (the document, with `gpu` and `host` records), built on `record`.

This package module imports nothing, so the probe can import `jueying_cli.facts.schema` alone."""
