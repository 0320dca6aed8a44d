"""SSH over paramiko, the only package that imports paramiko. Importing the package itself imports
nothing: `options` (SshOptions) stays paramiko-free, and router.py imports `client.SshTransport` lazily.

What it guarantees, because fan-out tools are hated for the opposite:
- host keys are verified against every known_hosts file OpenSSH would read (hashed entries and
  `[host]:port` included), and paramiko may only negotiate key types already recorded for the host,
  so a host known by its ed25519 key is never reported "unknown" over an RSA key;
- ~/.ssh/config and /etc/ssh/ssh_config are honoured (HostName, User, Port, IdentityFile,
  IdentitiesOnly, ProxyJump chains, ConnectTimeout, UserKnownHostsFile, HostKeyAlias);
- nothing ever prompts; every step is bounded by the node's deadline, and reading never blocks on
  paramiko's recv_exit_status (which has no timeout): stdout and stderr are drained together;
- TCP_NODELAY on every socket (without it a reused connection pays ~40 ms per command).

Modules: options (SshOptions), config (ssh_config files), endpoint (where and as whom to connect),
known_hosts (host keys), keys (identities and agent keys), client (SshTransport: connect, verify,
authenticate, run, keep connections), stream (SshStream and draining a channel's output).
"""
