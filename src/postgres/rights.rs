//! What the connected role may do, feature by feature, read from the
//! catalog before anything is tried: housekeeping (`veil maintain`, and the
//! periodic pass of `veil run`), the pipeline's writes, and the audited
//! reads (`reveal`, `find`, `forget`). `veil run` parks its housekeeping
//! when a right is missing instead of failing on it, and `veil doctor`
//! prints the same lists, so both tell the operator exactly which role
//! must run what.

use tokio_postgres::GenericClient;

use super::partitions::Partitioned;

/// The rights one feature lacks under the connected role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lacking {
    /// The connected role.
    pub role: String,
    /// The owner of the tables concerned (who can run the feature).
    pub owner: String,
    /// Each missing right, in words (`ownership of veil.ledger (ATTACH and
    /// DROP of its partitions)`).
    pub missing: Vec<String>,
}

impl Lacking {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    /// The missing rights as one clause.
    pub fn list(&self) -> String {
        self.missing.join(", ")
    }

    /// Who may do what this role may not: the tables' owner, by name when
    /// known.
    pub fn who_may(&self) -> String {
        if self.owner.is_empty() {
            "the tables' owner".into()
        } else {
            format!("the tables' owner ({})", self.owner)
        }
    }
}

/// One right, checked by a boolean SQL expression.
struct Right {
    /// What it is, in words.
    what: String,
    /// True when the connected role has it; NULL counts as had (the object
    /// does not exist, so nothing needs the right).
    check: String,
}

/// `text` as the inside of an SQL string literal.
fn literal(text: &str) -> String {
    text.replace('\'', "''")
}

impl Right {
    fn owns(table: &str, why: &str) -> Right {
        let table_literal = literal(table);
        Right {
            what: format!("ownership of {table} ({why})"),
            check: format!(
                "(SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass('{table_literal}'))"
            ),
        }
    }

    fn on_table(privilege: &str, table: &str) -> Right {
        Right::on_relation(
            format!("{privilege} on {table}"),
            "has_table_privilege",
            privilege,
            table,
        )
    }

    fn on_sequence(privilege: &str, sequence: &str) -> Right {
        Right::on_relation(
            format!("{privilege} on sequence {sequence}"),
            "has_sequence_privilege",
            privilege,
            sequence,
        )
    }

    /// A privilege on a relation, checked by `function` (a
    /// `has_*_privilege` taking the relation's oid).
    fn on_relation(what: String, function: &str, privilege: &str, name: &str) -> Right {
        Right {
            what,
            check: format!(
                "{function}(to_regclass('{}')::oid, '{privilege}')",
                literal(name)
            ),
        }
    }

    fn on_columns(privilege: &str, table: &str, columns: &[&str]) -> Right {
        let checks: Vec<String> = columns
            .iter()
            .map(|column| {
                format!(
                    "has_column_privilege(to_regclass('{}')::oid, '{column}'::text, '{privilege}')",
                    literal(table)
                )
            })
            .collect();
        Right {
            what: format!("{privilege} ({}) on {table}", columns.join(", ")),
            check: format!("({})", checks.join(" AND ")),
        }
    }

    fn on_schema(privilege: &str, schema: &str) -> Right {
        Right {
            what: format!("{privilege} on schema {schema}"),
            check: format!(
                "has_schema_privilege(to_regnamespace('{}')::oid, '{privilege}')",
                literal(schema)
            ),
        }
    }
}

/// Evaluates `rights` in one query; `owner_of` names whose tables they are.
async fn lacking(
    client: &impl GenericClient,
    owner_of: &str,
    rights: &[Right],
) -> Result<Lacking, tokio_postgres::Error> {
    let checks: Vec<String> = rights
        .iter()
        .map(|right| format!("coalesce({}, true)", right.check))
        .collect();
    let sql = format!(
        "SELECT current_user::text,
                coalesce((SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = to_regclass('{}')), ''),
                ARRAY[{}]::bool[]",
        literal(owner_of),
        checks.join(", ")
    );
    let row = client.query_one(&sql, &[]).await?;
    let had: Vec<bool> = row.get(2);
    Ok(Lacking {
        role: row.get(0),
        owner: row.get(1),
        missing: rights
            .iter()
            .zip(had)
            .filter(|(_, had)| !had)
            .map(|(right, _)| right.what.clone())
            .collect(),
    })
}

/// What housekeeping needs: ownership of the partitioned tables (ATTACH and
/// DROP of partitions are the owner's), CREATE in their schemas (the new
/// partitions), and DELETE on the default partitions (pruning). Beside the
/// ledger, `dated` lists the tables partitioned on a date (`user_logins`,
/// contract tables), each with whether a retention prunes its default
/// partition.
pub async fn housekeeping(
    client: &impl GenericClient,
    dated: &[(&Partitioned, bool)],
) -> Result<Lacking, tokio_postgres::Error> {
    let mut rights = vec![
        Right::owns("veil.ledger", "ATTACH and DROP of its partitions"),
        Right::on_schema("CREATE", "veil"),
        Right::on_table("DELETE", "veil.ledger_default"),
        Right::on_table("DELETE", "veil.ledger_unsent"),
        Right::owns("veil.ledger_v1", "dropping it once past the retention"),
    ];
    for (table, prunes) in dated {
        rights.push(Right::owns(
            &table.parent(),
            "ATTACH and DROP of its partitions",
        ));
        if let Partitioned::Dated(dated) = table {
            rights.push(Right::on_schema("CREATE", &dated.schema));
        }
        if *prunes {
            rights.push(Right::on_table("DELETE", &table.default_partition()));
        }
    }
    lacking(client, "veil.ledger", &rights).await
}

/// What `veil run` needs to record into `tables` (the contracts', as
/// SQL): insert rows, ledger entries and quarantine entries, and read the
/// ledger's key (ON CONFLICT, RETURNING).
pub async fn pipeline(
    client: &impl GenericClient,
    tables: &[String],
) -> Result<Lacking, tokio_postgres::Error> {
    let mut rights = vec![Right::on_schema("USAGE", "veil")];
    rights.extend(tables.iter().map(|table| Right::on_table("INSERT", table)));
    rights.extend([
        Right::on_table("INSERT", "veil.ledger"),
        Right::on_columns("SELECT", "veil.ledger", &["sent_ms", "message_id"]),
        Right::on_columns("SELECT", "veil.ledger_v1", &["message_id"]),
        Right::on_table("INSERT", "veil.quarantine"),
    ]);
    lacking(client, "veil.ledger", &rights).await
}

/// What the audited reads need (`reveal`, `find`; `forget` also deletes):
/// read the rows of `tables` and the quarantine, append to the audit.
pub async fn audited_reads(
    client: &impl GenericClient,
    tables: &[String],
) -> Result<Lacking, tokio_postgres::Error> {
    let mut rights = vec![Right::on_schema("USAGE", "veil")];
    rights.extend(tables.iter().map(|table| Right::on_table("SELECT", table)));
    rights.extend([
        Right::on_table("SELECT", "veil.quarantine"),
        Right::on_table("INSERT", "veil.audit"),
        Right::on_sequence("USAGE", "veil.audit_id_seq"),
    ]);
    lacking(client, "veil.audit", &rights).await
}
