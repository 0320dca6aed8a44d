"""SSH over paramiko, the only package that imports paramiko. Importing the package itself imports
nothing: `options` (SshOptions) stays paramiko-free, and router.py imports `client.SshTransport` lazily.

What it guarantees, because fan-out tools are hated for the opposite:
- host keys are judged as OpenSSH judges them, against every known_hosts file it would read: patterns
  and negation, hashed names, `[host]:port`, several keys per host, `@revoked`, `@cert-authority` with
  host certificates checked in full (paramiko checks none of a certificate), key types negotiated in
  OpenSSH's order (hostkeys, known_hosts, certs; README "Host keys: the rules");
- ~/.ssh/config and /etc/ssh/ssh_config are honoured (HostName, User, Port, IdentityFile,
  IdentitiesOnly, ProxyJump chains, ConnectTimeout, UserKnownHostsFile, HostKeyAlias);
- nothing ever prompts; every step is bounded by the node's deadline, and reading never blocks on
  paramiko's recv_exit_status (which has no timeout): stdout and stderr are drained together;
- TCP_NODELAY on every socket (without it a reused connection pays ~40 ms per command).

Modules: options (SshOptions), config (ssh_config files), endpoint (where and as whom to connect),
known_hosts (files, lines, name matching, recording), certs (key blobs and host certificates), hostkeys
(the verdict and the key type order), keys (identities and agent keys), client (SshTransport: connect,
verify, authenticate, run, keep connections), stream (SshStream and draining a channel's output).
"""
