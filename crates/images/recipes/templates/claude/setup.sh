# Layer build (root, chroot of base + this layer).
ln -s /opt/claude/claude /usr/local/bin/claude
# First-run screens answered once for the image (per-workspace answers: prepare.sh).
install -d -o agent -g agent -m 0755 /home/agent/.claude
cat > /home/agent/.claude/settings.json <<'JSON'
{
  "skipDangerousModePermissionPrompt": true,
  "autoUpdates": false
}
JSON
cat > /home/agent/.claude.json <<'JSON'
{
  "hasCompletedOnboarding": true,
  "theme": "dark",
  "autoUpdates": false,
  "bypassPermissionsModeAccepted": true,
  "projects": {}
}
JSON
chown agent:agent /home/agent/.claude/settings.json /home/agent/.claude.json
