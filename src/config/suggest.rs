//! "Did you mean": the valid name closest to a misspelt one.

/// The valid name closest to a misspelt one, if any is close enough to be a plausible typo.
pub fn closest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = given.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, c), *c))
        .filter(|(distance, c)| *distance <= (c.len() / 3).max(2) || c.contains(lower.as_str()))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}
