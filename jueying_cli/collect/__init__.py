"""Facts collection: `payload` (what is shipped to a node), `oneshot` (one probe run per node over the
fan-out), `sessions` (a kept probe per node for repeated reads)."""
