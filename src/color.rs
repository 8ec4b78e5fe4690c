//! The two deployments, blue and green: the one type the config, the routing table, the
//! metrics and the control plane all share. It lives alone so none of them has to import
//! another just to name a color.

use std::fmt;
use std::str::FromStr;

/// A deployment: one of the two copies of the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// Index into per-color arrays.
    pub fn idx(self) -> usize {
        match self {
            Color::Blue => 0,
            Color::Green => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown color \"{0}\": the colors are blue and green")]
pub struct UnknownColor(pub String);

impl FromStr for Color {
    type Err = UnknownColor;
    fn from_str(s: &str) -> Result<Color, UnknownColor> {
        if s.eq_ignore_ascii_case("blue") {
            Ok(Color::Blue)
        } else if s.eq_ignore_ascii_case("green") {
            Ok(Color::Green)
        } else {
            Err(UnknownColor(s.to_string()))
        }
    }
}
