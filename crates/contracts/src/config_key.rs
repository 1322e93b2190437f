//! Config keys `{board}_{n}p`: the 12 board/player-count combinations, parsed in one place.

use std::fmt;
use std::str::FromStr;

/// A string that is not one of the 12 config keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key {0:?}: expected {{square8,square19,hex8,hexagonal}}_{{2,3,4}}p")]
pub struct InvalidConfigKey(pub String);

/// A board kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Board {
    Square8,
    Square19,
    Hex8,
    Hexagonal,
}

impl Board {
    pub const ALL: [Board; 4] = [
        Board::Square8,
        Board::Square19,
        Board::Hex8,
        Board::Hexagonal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Board::Square8 => "square8",
            Board::Square19 => "square19",
            Board::Hex8 => "hex8",
            Board::Hexagonal => "hexagonal",
        }
    }
}

/// A validated config key such as `hex8_2p`. Only the 12 valid combinations exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigKey {
    board: Board,
    players: u8,
}

impl ConfigKey {
    /// Builds a key; `players` must be 2, 3 or 4.
    pub fn new(board: Board, players: u8) -> Result<Self, InvalidConfigKey> {
        if (2..=4).contains(&players) {
            Ok(ConfigKey { board, players })
        } else {
            Err(InvalidConfigKey(format!("{}_{}p", board.as_str(), players)))
        }
    }

    /// All 12 keys, boards in declaration order, then players 2..=4.
    pub fn all() -> Vec<ConfigKey> {
        Board::ALL
            .iter()
            .flat_map(|&board| (2..=4).map(move |players| ConfigKey { board, players }))
            .collect()
    }

    pub fn board(self) -> Board {
        self.board
    }

    pub fn players(self) -> u8 {
        self.players
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}p", self.board.as_str(), self.players)
    }
}

impl FromStr for ConfigKey {
    type Err = InvalidConfigKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidConfigKey(s.to_string());
        let (board, rest) = s.rsplit_once('_').ok_or_else(bad)?;
        let board = Board::ALL
            .into_iter()
            .find(|b| b.as_str() == board)
            .ok_or_else(bad)?;
        let players = match rest {
            "2p" => 2,
            "3p" => 3,
            "4p" => 4,
            _ => return Err(bad()),
        };
        Ok(ConfigKey { board, players })
    }
}

impl serde::Serialize for ConfigKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ConfigKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_twelve_round_trip() {
        let all = ConfigKey::all();
        assert_eq!(all.len(), 12);
        for k in all {
            assert_eq!(k.to_string().parse::<ConfigKey>().ok(), Some(k));
        }
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in [
            "", "hex8", "hex8_5p", "hex8_1p", "hex9_2p", "HEX8_2p", "hex8_2p ", "_2p", "hex8__2p",
        ] {
            let err = bad.parse::<ConfigKey>();
            assert!(err.is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let k: ConfigKey = "hexagonal_3p".parse().expect("valid key");
        let json = serde_json::to_string(&k).expect("serialize");
        assert_eq!(json, "\"hexagonal_3p\"");
        let back: ConfigKey = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, k);
        assert!(serde_json::from_str::<ConfigKey>("\"square8_9p\"").is_err());
    }
}
