//! Whether output may carry ANSI colour: only on a terminal, and never when `NO_COLOR` is set
//! to anything non-empty (<https://no-color.org>), which users set once for every tool.

/// Colour for an output stream that `is_terminal` says is (or is not) a terminal.
pub fn wanted(is_terminal: bool) -> bool {
    is_terminal && !no_color(std::env::var_os("NO_COLOR").as_deref())
}

fn no_color(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_no_color_is_unset_and_any_other_value_turns_colour_off() {
        assert!(!no_color(None));
        assert!(!no_color(Some("".as_ref())));
        assert!(no_color(Some("1".as_ref())));
        assert!(no_color(Some("0".as_ref())));
    }
}
