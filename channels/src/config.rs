//! What the channels' config sections share: an error naming `<channel>.<field>` and how to
//! fix it, the check of a service's base URL, and the rule that somebody may decide and
//! somebody receives prompts (`targets` default to `allow_from`).

/// A config problem in one channel's section, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{section}.{field} {message}")]
pub struct ConfigError {
    /// The channel's section: `telegram`, `discord`, `slack` or `matrix`.
    pub section: &'static str,
    pub field: &'static str,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(
        section: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            section,
            field,
            message: message.into(),
        }
    }
}

/// As the binary reports every config error: the dotted path of the field, then the problem.
impl From<ConfigError> for bridge::config::ConfigError {
    fn from(e: ConfigError) -> Self {
        bridge::config::ConfigError::new(format!("{}.{}", e.section, e.field), e.message)
    }
}

/// Who receives prompts: `targets`, or everyone in `allow_from` when it is unset (a user's
/// id converts to their DM target).
pub(crate) fn effective_targets<U, T>(allow_from: &[U], targets: &Option<Vec<T>>) -> Vec<T>
where
    U: Clone + Into<T>,
    T: Clone,
{
    match targets {
        Some(t) => t.clone(),
        None => allow_from.iter().cloned().map(Into::into).collect(),
    }
}

/// Somebody may decide and somebody receives prompts; `find_your_id` tells the owner how to
/// get the id to add.
pub(crate) fn check_people<U, T>(
    section: &'static str,
    allow_from: &[U],
    targets: &Option<Vec<T>>,
    find_your_id: &str,
) -> Result<(), ConfigError>
where
    U: Clone + Into<T>,
    T: Clone,
{
    if allow_from.is_empty() {
        return Err(ConfigError::new(
            section,
            "allow_from",
            format!("is empty: nobody could decide; add {find_your_id}"),
        ));
    }
    if effective_targets(allow_from, targets).is_empty() {
        return Err(ConfigError::new(
            section,
            "targets",
            "is empty: nobody would receive prompts",
        ));
    }
    Ok(())
}

/// A service's base URL (`api_url`, `homeserver`): http or https, no query or fragment.
pub(crate) fn parse_base_url(
    section: &'static str,
    field: &'static str,
    s: &str,
) -> Result<url::Url, ConfigError> {
    let err = |m: String| ConfigError::new(section, field, m);
    let u = url::Url::parse(s).map_err(|e| err(format!("{s:?} is not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(err(format!("{s:?} must be http:// or https://")));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(err(format!("{s:?} must not carry a query or fragment")));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_section_and_field() {
        let e = parse_base_url("slack", "api_url", "ftp://x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "slack.api_url \"ftp://x\" must be http:// or https://"
        );
        let e = parse_base_url("matrix", "homeserver", "https://m.org/?a=1").unwrap_err();
        assert_eq!(e.field, "homeserver");
        assert!(e.message.contains("query"), "{e}");
        assert!(parse_base_url("discord", "api_url", "not a url").is_err());
        assert!(parse_base_url("discord", "api_url", "https://discord.com/api").is_ok());
    }

    #[test]
    fn somebody_decides_and_somebody_receives() {
        let none: Vec<u8> = Vec::new();
        let e = check_people::<u8, u8>("telegram", &none, &None, "your id").unwrap_err();
        assert_eq!(
            (e.field, e.message.as_str()),
            ("allow_from", "is empty: nobody could decide; add your id")
        );
        let e = check_people::<u8, u8>("telegram", &[1], &Some(Vec::new()), "your id").unwrap_err();
        assert_eq!(e.field, "targets");
        assert!(check_people::<u8, u8>("telegram", &[1u8], &None, "your id").is_ok());
        assert_eq!(effective_targets::<u8, u16>(&[1, 2], &None), [1, 2]);
        assert_eq!(effective_targets::<u8, u16>(&[1, 2], &Some(vec![3])), [3]);
    }
}
