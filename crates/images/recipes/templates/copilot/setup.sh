# Layer build (root, chroot of base + this layer).
ln -s /opt/copilot/copilot /usr/local/bin/copilot
# Unpack the runtime now, into the image, not into each sandbox's home.
COPILOT_PKG_CACHE_HOME=/opt/copilot/pkg HOME=/root /opt/copilot/copilot --version
chmod -R a+rX /opt/copilot
install -d -o agent -g agent -m 0755 /home/agent/.copilot
cat > /home/agent/.copilot/settings.json <<'JSON'
{
  "autoUpdate": false,
  "banner": "never",
  "showTipsOnStartup": false,
  "trustedFolders": ["/"]
}
JSON
chown agent:agent /home/agent/.copilot/settings.json
rm -rf /root/.copilot /root/.cache
