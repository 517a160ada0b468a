# Layer build (root, chroot of base + this layer).
ln -s /opt/opencode/bin/opencode /usr/local/bin/opencode
install -d -o agent -g agent -m 0755 /home/agent/.config /home/agent/.config/opencode
cat > /home/agent/.config/opencode/opencode.json <<'JSON'
{
  "$schema": "https://opencode.ai/config.json",
  "autoupdate": false,
  "share": "disabled",
  "permission": "allow"
}
JSON
chown agent:agent /home/agent/.config/opencode/opencode.json
