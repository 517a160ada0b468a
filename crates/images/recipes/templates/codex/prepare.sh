# Runs as the launching user in the workspace, then execs the agent.
# Trusts this workspace once (Codex otherwise asks).
home="${CODEX_HOME:-$HOME/.codex}"
mkdir -p "$home"
cfg="$home/config.toml"
touch "$cfg"
esc=$(printf '%s' "$PWD" | sed 's/\\/\\\\/g; s/"/\\"/g')
line="[projects.\"$esc\"]"
if ! grep -qxF "$line" "$cfg"; then
    printf '\n%s\ntrust_level = "trusted"\n' "$line" >> "$cfg"
fi
