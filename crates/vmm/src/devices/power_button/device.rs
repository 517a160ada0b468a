//! Power-button semantics: one read-only byte, 0 until the VMM presses the
//! button, 1 from then on. Writes are ignored.

/// Value read once the button has been pressed.
pub const PRESSED: u8 = 1;

/// The button's state.
#[derive(Debug, Default, Clone, Copy)]
pub struct PowerButton {
    pressed: bool,
}

impl PowerButton {
    /// Presses the button; it stays pressed.
    pub fn press(&mut self) {
        self.pressed = true;
    }

    /// Whether the VMM has asked the guest to shut down.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// The register's value.
    pub fn read_register(&self) -> u8 {
        if self.pressed {
            PRESSED
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zero_until_pressed_then_stays_pressed() {
        let mut button = PowerButton::default();
        assert_eq!(button.read_register(), 0);
        button.press();
        button.press();
        assert_eq!(button.read_register(), PRESSED);
        assert!(button.is_pressed());
    }
}
