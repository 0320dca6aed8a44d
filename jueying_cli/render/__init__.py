"""Output: the terminal (render.terminal, the only rich import), the JSON envelope, Prometheus text, clush-style
gathered output. Knows only data types from the floors below it (facts, summaries, outcomes), never a transport."""
