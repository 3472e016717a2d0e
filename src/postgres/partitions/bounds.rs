//! A partition's range as the catalog writes it, and the tests on it: does
//! it overlap another, does it end before the retention's cutoff. Pure.

use chrono::NaiveDate;

/// The bounds of one range partition, in the partition key's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// `sent_ms` from `from_ms` (inclusive) to `to_ms` (exclusive); `None`
    /// for MINVALUE.
    Millis {
        /// Lower bound; None is MINVALUE.
        from_ms: Option<i64>,
        /// Upper bound.
        to_ms: i64,
    },
    /// `create_date` from `from` to `to` (exclusive).
    Dates {
        /// Lower bound.
        from: NaiveDate,
        /// Upper bound.
        to: NaiveDate,
    },
}

impl Bound {
    /// The `FOR VALUES` clause.
    pub fn for_values(&self) -> String {
        match self {
            Bound::Millis { from_ms, to_ms } => format!(
                "FROM ({}) TO ({to_ms})",
                from_ms.map_or("MINVALUE".to_string(), |ms| ms.to_string())
            ),
            Bound::Dates { from, to } => format!("FROM ('{from}') TO ('{to}')"),
        }
    }

    /// The CHECK that lets `ATTACH` skip scanning the new table.
    pub(super) fn check(&self, column: &str) -> String {
        match self {
            Bound::Millis {
                from_ms: Some(from),
                to_ms,
            } => format!("{column} >= {from} AND {column} < {to_ms}"),
            Bound::Millis {
                from_ms: None,
                to_ms,
            } => format!("{column} < {to_ms}"),
            Bound::Dates { from, to } => format!("{column} >= '{from}' AND {column} < '{to}'"),
        }
    }

    /// Whether two ranges share a value.
    pub fn overlaps(&self, other: &Bound) -> bool {
        match (self, other) {
            (
                Bound::Millis {
                    from_ms: a,
                    to_ms: b,
                },
                Bound::Millis {
                    from_ms: c,
                    to_ms: d,
                },
            ) => a.unwrap_or(i64::MIN) < *d && c.unwrap_or(i64::MIN) < *b,
            (Bound::Dates { from: a, to: b }, Bound::Dates { from: c, to: d }) => a < d && c < b,
            _ => false,
        }
    }

    /// Whether every value in the range lies before `keep_from`, the oldest
    /// value still kept (the partition may be dropped). A MINVALUE range
    /// never does: it holds the entries without a send time, which are
    /// pruned by age instead.
    pub fn ends_before(&self, keep_from: &Cutoff) -> bool {
        match (self, keep_from) {
            (
                Bound::Millis {
                    from_ms: Some(_),
                    to_ms,
                },
                Cutoff::Millis(limit),
            ) => to_ms <= limit,
            (Bound::Dates { to, .. }, Cutoff::Date(limit)) => to <= limit,
            _ => false,
        }
    }

    /// Whether this range lies wholly before `other` begins.
    pub fn ends_before_start_of(&self, other: &Bound) -> bool {
        match (self, other) {
            (
                Bound::Millis { to_ms, .. },
                Bound::Millis {
                    from_ms: Some(start),
                    ..
                },
            ) => to_ms <= start,
            (Bound::Dates { to, .. }, Bound::Dates { from, .. }) => to <= from,
            _ => false,
        }
    }

    /// Parses `pg_get_expr(relpartbound)` of a range partition, e.g.
    /// `FOR VALUES FROM ('1795564800000') TO ('1795651200000')` or
    /// `FOR VALUES FROM (MINVALUE) TO ('1')`. None for DEFAULT.
    pub fn parse(expression: &str) -> Option<Bound> {
        let rest = expression.strip_prefix("FOR VALUES FROM (")?;
        let (from, rest) = rest.split_once(") TO (")?;
        let to = rest.strip_suffix(')')?;
        let unquote = |value: &str| value.trim().trim_matches('\'').to_string();
        let (from, to) = (unquote(from), unquote(to));
        if let Ok(to_ms) = to.parse::<i64>() {
            let from_ms = match from.as_str() {
                "MINVALUE" => None,
                value => Some(value.parse::<i64>().ok()?),
            };
            return Some(Bound::Millis { from_ms, to_ms });
        }
        Some(Bound::Dates {
            from: from.parse().ok()?,
            to: to.parse().ok()?,
        })
    }
}

/// The oldest value a table keeps: partitions ending at or before it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// A `sent_ms` value.
    Millis(i64),
    /// A `create_date` value.
    Date(NaiveDate),
}

#[cfg(test)]
mod tests {
    use super::super::tables::{day_start_ms, Partitioned};
    use super::super::testing::{day, user_logins};
    use super::*;

    #[test]
    fn catalog_bounds_parse_back() {
        assert_eq!(
            Bound::parse("FOR VALUES FROM ('1795564800000') TO ('1795651200000')"),
            Some(Bound::Millis {
                from_ms: Some(1_795_564_800_000),
                to_ms: 1_795_651_200_000
            })
        );
        assert_eq!(
            Bound::parse("FOR VALUES FROM (MINVALUE) TO ('1')"),
            Some(Bound::Millis {
                from_ms: None,
                to_ms: 1
            })
        );
        assert_eq!(
            Bound::parse("FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"),
            Some(Bound::Dates {
                from: day("2026-11-01"),
                to: day("2026-12-01")
            })
        );
        assert_eq!(Bound::parse("DEFAULT"), None);
    }

    #[test]
    fn only_ranges_wholly_before_the_cutoff_are_dropped() {
        let keep_from = Cutoff::Millis(day_start_ms(day("2026-11-10")));
        let older = Partitioned::Ledger.partition_for(day("2026-11-09")).bound;
        let kept = Partitioned::Ledger.partition_for(day("2026-11-10")).bound;
        let cutoff = kept.clone();
        let unsent = Bound::Millis {
            from_ms: None,
            to_ms: 1,
        };
        assert!(older.ends_before(&keep_from));
        assert!(!kept.ends_before(&keep_from));
        assert!(!unsent.ends_before(&keep_from));
        let month = Partitioned::Dated(user_logins("analytics"));
        assert_eq!(month.parent(), "analytics.user_logins");
        let month = month.partition_for(day("2026-09-15")).bound;
        assert!(month.ends_before(&Cutoff::Date(day("2026-10-01"))));
        assert!(!month.ends_before(&Cutoff::Date(day("2026-09-30"))));
        assert!(older.overlaps(&older));
        assert!(!older.overlaps(&cutoff));
        assert!(unsent.overlaps(&Bound::Millis {
            from_ms: Some(0),
            to_ms: 5
        }));
    }
}
