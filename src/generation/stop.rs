//! Stop strings over streamed text: a stop string is never sent, so text that could be the start
//! of one is held back until the next tokens show whether it is.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What one piece of generated text released.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text now safe to send.
    pub text: String,
    /// The stop string found, if any; generation ends and nothing after it is sent.
    pub stop: Option<String>,
}

impl StopMatcher {
    pub fn new(stops: impl IntoIterator<Item = String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Released {
        self.held.push_str(text);
        let found = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()).map(|at| (at, stop)))
            .min_by_key(|&(at, _)| at);
        if let Some((at, stop)) = found {
            let stop = stop.clone();
            self.held.truncate(at);
            return Released {
                text: std::mem::take(&mut self.held),
                stop: Some(stop),
            };
        }
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep_from);
        Released {
            text: std::mem::replace(&mut self.held, rest),
            stop: None,
        }
    }

    /// The text held back when generation ends for another reason: it was no stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(text: &str) -> Released {
        Released {
            text: text.into(),
            stop: None,
        }
    }

    #[test]
    fn holds_back_a_possible_start_of_a_stop_string() {
        let mut matcher = StopMatcher::new(["User:".to_string()]);
        assert_eq!(matcher.push("Hello U"), released("Hello "));
        assert_eq!(matcher.push("s"), released(""));
        assert_eq!(matcher.push("eful"), released("Useful"));
        assert_eq!(
            matcher.push(" text\nUs"),
            released(" text\n"),
            "the held text starts over"
        );
        assert_eq!(
            matcher.push("er: more"),
            Released {
                text: String::new(),
                stop: Some("User:".into())
            }
        );
    }

    #[test]
    fn the_earliest_stop_string_wins_and_later_text_is_dropped() {
        let mut matcher = StopMatcher::new(["b".to_string(), "a".to_string()]);
        assert_eq!(
            matcher.push("xxaxb"),
            Released {
                text: "xx".into(),
                stop: Some("a".into())
            }
        );
    }

    #[test]
    fn finish_returns_what_turned_out_not_to_be_a_stop_string() {
        let mut matcher = StopMatcher::new(["###".to_string(), String::new()]);
        assert_eq!(matcher.push("é #"), released("é "));
        assert_eq!(matcher.push("#"), released(""));
        assert_eq!(matcher.finish(), "##");
    }

    #[test]
    fn without_stop_strings_everything_passes() {
        let mut matcher = StopMatcher::new(Vec::new());
        assert_eq!(matcher.push("abc"), released("abc"));
        assert_eq!(matcher.finish(), "");
    }
}
