# Runs inside the debootstrapped tree (`chroot TREE /bin/sh -eu setup.sh`)
# after the packages are installed and `npm.toml` is unpacked. No init
# system: the guest agent is PID 1.

# Node.js and npm under /usr/local (npm's global prefix is then /usr/local).
install -m 0755 /usr/local/lib/moat-node/bin/node /usr/local/bin/node
rm -rf /usr/local/lib/moat-node
ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
# The image is the version: no update nagging, no funding or audit chatter.
printf 'update-notifier=false\nfund=false\naudit=false\n' > /usr/local/etc/npmrc

# The unprivileged user agents run as, with passwordless sudo.
groupadd --gid 1000 agent
useradd --no-log-init --uid 1000 --gid 1000 --groups sudo \
    --create-home --home-dir /home/agent --shell /bin/bash agent
printf 'agent ALL=(ALL:ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/agent
chmod 0440 /etc/sudoers.d/agent

# Per-sandbox persistent environment: root in the guest writes
# /etc/sandbox-persistent.sh (it lives on the state disk's overlay);
# every login shell sources it.
cat > /etc/profile.d/moat.sh <<'PROFILE'
# Moat sandbox environment.
export LANG=C.UTF-8
if [ -r /etc/sandbox-persistent.sh ]; then
    . /etc/sandbox-persistent.sh
fi
PROFILE
chmod 0644 /etc/profile.d/moat.sh
: > /etc/sandbox-persistent.sh
chmod 0644 /etc/sandbox-persistent.sh

# git over HTTPS to GitHub authenticates with the sandbox's GitHub placeholder
# (from $GH_TOKEN at the time of use); the host's proxy swaps in the real token.
cat > /etc/gitconfig <<'GITCONFIG'
[credential "https://github.com"]
	helper = "!f() { test \"$1\" = get && test -n \"$GH_TOKEN\" && printf 'username=x-access-token\\npassword=%s\\n' \"$GH_TOKEN\"; }; f"
GITCONFIG
chmod 0644 /etc/gitconfig

# Docker: the agent starts the engine when /run/docker.sock is first used.
# Containers resolve names through the gateway (the agent's DNS, under policy)
# and their clients get the explicit proxy; TCP they open anyway is
# redirected like every other guest connection.
usermod --append --groups docker agent
mkdir -p /etc/docker
cat > /etc/docker/daemon.json <<'DAEMON'
{
  "dns": ["198.18.0.1"],
  "log-driver": "json-file",
  "log-opts": { "max-size": "10m", "max-file": "2" }
}
DAEMON
for home in /root /home/agent; do
    mkdir -p "$home/.docker"
    cat > "$home/.docker/config.json" <<'CLIENT'
{
  "proxies": {
    "default": {
      "httpProxy": "http://198.18.0.1:3128",
      "httpsProxy": "http://198.18.0.1:3128",
      "noProxy": "localhost,127.0.0.1,::1"
    }
  }
}
CLIENT
done
chown -R agent:agent /home/agent/.docker

echo moat > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tmoat\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts

# Space: package lists, caches, logs and docs are not needed at run time.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
    /var/lib/dpkg/*-old /var/cache/ldconfig/aux-cache
find /var/log -type f -delete
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
rm -f /etc/machine-id /var/lib/dbus/machine-id
