# Runs as the launching user in the workspace, then execs the agent.
# Answers Claude Code's per-folder questions: trust this workspace, and use
# the ANTHROPIC_API_KEY in the environment (a placeholder the proxy swaps).
cfg="$HOME/.claude.json"
[ -s "$cfg" ] || echo '{}' > "$cfg"
tail=$(printf '%s' "${ANTHROPIC_API_KEY:-}" | tail -c 20)
jq --arg dir "$PWD" --arg key "$tail" '
  .hasCompletedOnboarding = true | .bypassPermissionsModeAccepted = true | .autoUpdates = false
  | .projects[$dir].hasTrustDialogAccepted = true
  | .projects[$dir].hasCompletedProjectOnboarding = true
  | if $key == "" then . else
      .customApiKeyResponses.approved = (((.customApiKeyResponses.approved // []) + [$key]) | unique)
    end' "$cfg" > "$cfg.moat" && mv "$cfg.moat" "$cfg"
