//! Shell quoting: words made safe to paste into `/bin/sh -c`, which runs every agent's command.

/// Quotes one word for a POSIX shell: as it is when it holds only characters a shell takes
/// literally, else in single quotes (a `'` inside becomes `'\''`).
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Quotes each word and joins them with spaces: a command line that runs exactly these words.
pub fn join<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_and_others_are_single_quoted() {
        assert_eq!(quote("app.js"), "app.js");
        assert_eq!(quote("/srv/my app/run.py"), "'/srv/my app/run.py'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME;rm"), "'$HOME;rm'");
        assert_eq!(join(["python3", "-u", "a b.py"]), "python3 -u 'a b.py'");
    }
}
