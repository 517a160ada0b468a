# Layer build (root, chroot of base + this layer).
vendor=/opt/codex/vendor/x86_64-unknown-linux-musl
# Voice support is a separate glibc program with gstreamer: not for a sandbox.
rm -rf "$vendor/codex-resources/voice"
ln -s "$vendor/bin/codex" /usr/local/bin/codex
# No approvals, no nested sandbox (the VM is the sandbox), no update check,
# no analytics, no plugin clone from github.com at start.
install -d -o agent -g agent -m 0755 /home/agent/.codex
cat > /home/agent/.codex/config.toml <<'TOML'
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
apps = false
remote_plugin = false

[notice]
hide_full_access_warning = true
TOML
chown agent:agent /home/agent/.codex/config.toml
