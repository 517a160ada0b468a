# Layer build (root, chroot of base + this layer).
ln -s ../lib/node_modules/@google/gemini-cli/bundle/gemini.js /usr/local/bin/gemini
chmod 0755 /usr/local/lib/node_modules/@google/gemini-cli/bundle/gemini.js
# API-key auth (no login dialog; also what a base-URL override needs), no
# usage statistics, telemetry or auto-update.
install -d -o agent -g agent -m 0755 /home/agent/.gemini
cat > /home/agent/.gemini/settings.json <<'JSON'
{
  "security": { "auth": { "selectedType": "gemini-api-key" }, "folderTrust": { "enabled": false } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": { "enableAutoUpdate": false, "enableAutoUpdateNotification": false },
  "ui": { "theme": "Default" }
}
JSON
chown agent:agent /home/agent/.gemini/settings.json
