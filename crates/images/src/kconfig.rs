//! Checking that a kernel config fragment survived `make olddefconfig`.
//! Kconfig silently drops an option whose dependencies are off, so every
//! assignment in the fragment is verified against the final `.config`.

/// Options of `fragment` that the final `config` does not honour: each
/// `CONFIG_X=v` line must appear verbatim, and each `# CONFIG_X is not set`
/// must not be enabled. Returned as the fragment's lines.
pub fn dropped_options(fragment: &str, config: &str) -> Vec<String> {
    let has_line = |wanted: &str| config.lines().any(|line| line.trim() == wanted);
    fragment
        .lines()
        .map(str::trim)
        .filter(|line| {
            if let Some(name) = unset_option(line) {
                has_line(&format!("{name}=y")) || has_line(&format!("{name}=m"))
            } else if line.starts_with("CONFIG_") && line.contains('=') {
                !has_line(line)
            } else {
                false
            }
        })
        .map(str::to_string)
        .collect()
}

fn unset_option(line: &str) -> Option<&str> {
    line.strip_prefix("# ")?.strip_suffix(" is not set").filter(|n| n.starts_with("CONFIG_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = "# comment\nCONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=64\n# CONFIG_MODULES is not set\n\n";

    #[test]
    fn all_present() {
        let config = "CONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=64\n# CONFIG_MODULES is not set\n";
        assert!(dropped_options(FRAGMENT, config).is_empty());
    }

    #[test]
    fn catches_a_dropped_option() {
        let config = "# CONFIG_EXT4_FS is not set\nCONFIG_NR_CPUS=64\n";
        assert_eq!(dropped_options(FRAGMENT, config), ["CONFIG_EXT4_FS=y"]);
    }

    #[test]
    fn catches_a_changed_value_and_an_unwanted_option() {
        let config = "CONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=8\nCONFIG_MODULES=y\n";
        assert_eq!(dropped_options(FRAGMENT, config), ["CONFIG_NR_CPUS=64", "# CONFIG_MODULES is not set"]);
    }

    #[test]
    fn prefix_names_do_not_match() {
        // CONFIG_EXT4_FS_SECURITY=y must not satisfy CONFIG_EXT4_FS=y.
        let config = "CONFIG_EXT4_FS_SECURITY=y\nCONFIG_NR_CPUS=64\n";
        assert_eq!(dropped_options(FRAGMENT, config), ["CONFIG_EXT4_FS=y"]);
    }

    #[test]
    fn the_shipped_fragment_parses() {
        let fragment = super::super::kernel::KERNEL_FRAGMENT;
        let config: String = fragment.lines().filter(|l| l.starts_with("CONFIG_")).collect::<Vec<_>>().join("\n");
        assert!(dropped_options(fragment, &config).is_empty());
        assert!(fragment.contains("CONFIG_VIRTIO_FS=y"));
    }
}
