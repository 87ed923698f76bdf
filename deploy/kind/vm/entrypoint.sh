#!/bin/sh
# Entrypoint of the demo VM (deploy/kind/vm/Dockerfile): sshd for one login user, with the host
# key and the authorized public key that scripts/kind-up generated and put into the Secret
# vm1-sshd (mounted at $JOBNET_VM_KEYS). Everything sshd needs is written under $JOBNET_VM_RUN_DIR;
# sshd then runs in the foreground and logs to stderr (kubectl logs).
#
# tests/kind runs this same file inside a namespace VM, with the variables below pointing at
# that VM's user and directories.
set -eu

keys=${JOBNET_VM_KEYS:-/etc/jobnet-vm}
user=${JOBNET_VM_USER:-batch}
port=${JOBNET_VM_PORT:-22}
run_dir=${JOBNET_VM_RUN_DIR:-/run/jobnet-vm}

fail() {
  echo "jobnet-vm: $*" >&2
  exit 1
}

for file in ssh_host_ed25519_key authorized_keys; do
  [ -s "$keys/$file" ] || fail "$keys/$file is missing or empty: the Secret vm1-sshd must hold it (scripts/kind-up creates it)"
done
home=$(getent passwd "$user" | cut -d: -f6)
[ -n "$home" ] || fail "no user $user here"
group=$(id -gn "$user")

# sshd refuses a host key others can read, and authorized_keys the user does not own; a Secret
# volume's files belong to root, so both are copied with the modes sshd wants.
umask 077
mkdir -p "$run_dir" /run/sshd
cp "$keys/ssh_host_ed25519_key" "$run_dir/ssh_host_ed25519_key"
install -d -m 0700 -o "$user" -g "$group" "$home/.ssh"
install -m 0600 -o "$user" -g "$group" "$keys/authorized_keys" "$home/.ssh/authorized_keys"

cat >"$run_dir/sshd_config" <<CONFIG
Port $port
HostKey $run_dir/ssh_host_ed25519_key
PidFile $run_dir/sshd.pid
AllowUsers $user
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
LogLevel VERBOSE
Subsystem sftp internal-sftp
CONFIG
/usr/sbin/sshd -t -f "$run_dir/sshd_config"

fingerprint=$(ssh-keygen -l -f "$run_dir/ssh_host_ed25519_key" | cut -d' ' -f2)
echo "jobnet-vm: sshd on port $port for user $user, host key $fingerprint"
exec /usr/sbin/sshd -D -e -f "$run_dir/sshd_config"
