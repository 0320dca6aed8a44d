"""SSH over paramiko, the only package that imports paramiko. Importing the package itself imports
nothing: `options` (SshOptions) stays paramiko-free, and router.py imports `client.SshTransport` lazily.

What it guarantees, because fan-out tools are hated for the opposite:
- host keys are judged as OpenSSH judges them, against every known_hosts file it would read: patterns
  and negation, hashed names, `[host]:port`, several keys per host, `@revoked`, `@cert-authority` with
  host certificates checked in full (paramiko checks none of a certificate), key types negotiated in
  OpenSSH's order (hostkeys, known_hosts, certs; README "Host keys: the rules");
- ~/.ssh/config and /etc/ssh/ssh_config are read as OpenSSH reads them (Include, Host patterns, Match
  with a final pass, tokens, first value wins; README "ssh_config: the rules"), every bad line an error
  naming file:line;
- nothing ever prompts; every step is bounded by the node's deadline, and reading never blocks on
  paramiko's recv_exit_status (which has no timeout): stdout and stderr are drained together;
- TCP_NODELAY on every socket (without it a reused connection pays ~40 ms per command).

Modules: options (SshOptions), config (ssh_config files: reading, Include, the name index, lookups),
config_syntax (lines, words, keywords and their checks), config_match (Host patterns, Match, tokens),
endpoint (where and as whom to connect), known_hosts (files, lines, name matching, recording), certs (key
blobs and host certificates), hostkeys (the verdict and the key type order), keys (identities and agent keys),
client (SshTransport: connect, verify, authenticate, run, keep connections), stream (SshStream and draining
a channel's output).
"""
