"""Failure drills (`jueying drill`): a playbook (`playbook`, validated whole before anything runs), built-in
probes (`probes`) and faults with an undo and a node-side time-to-live (`faults`), and the runner (`runner`)
that injects, measures, always rolls back and keeps a journal in the state database (`store.drills`)."""
