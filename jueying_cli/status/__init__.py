"""What `jueying status` shows, as pure functions of facts: `summary` (node rows, totals, sorting, folding),
`history` (history rows and changes), `view` (rows for a whole collection with scheduler states)."""
