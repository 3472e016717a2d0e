//! `veil contract show|check|ddl|export`, and `veil migrate --contract`.

use crate::cli::{ContractArgs, ContractCommand};
use crate::contract::{self, Plan};
use crate::postgres::contract_sql::{self, TableChange};
use crate::postgres::Database;

/// `veil contract ...`.
pub fn run(command: ContractCommand) -> anyhow::Result<()> {
    match command {
        ContractCommand::Show => print!("{}", contract::LOGIN_CONTRACT_YAML),
        ContractCommand::Check(args) => println!("{}", describe(&plan_of(&args)?)),
        ContractCommand::Ddl(args) => {
            for contract in &plan_of(&args)?.contracts {
                println!(
                    "-- contract {} version {}\n{}",
                    contract.name,
                    contract.version,
                    contract_sql::create_table_sql(contract)
                );
            }
        }
        ContractCommand::Export(args) => {
            let schema = contract::json_schema::export(&plan_of(&args.contracts)?);
            println!("{}", serde_json::to_string_pretty(&schema)?);
        }
    }
    Ok(())
}

/// The plan of the arguments, or the built-in login contract.
fn plan_of(args: &ContractArgs) -> anyhow::Result<Plan> {
    Ok(match &args.contract {
        Some(path) => contract::load(path)?,
        None => contract::builtin_login(),
    })
}

/// What `contract check` prints of a plan that passed.
fn describe(plan: &Plan) -> String {
    let mut lines = Vec::new();
    for contract in &plan.contracts {
        let route = contract
            .route
            .as_ref()
            .map_or("every body".to_string(), |r| {
                format!("bodies whose {} is {:?}", r.pointer, r.equals)
            });
        let masked: Vec<String> = contract
            .columns
            .iter()
            .filter_map(|c| {
                c.pii.as_ref().map(|p| {
                    format!(
                        "{} ({}, domain {})",
                        c.name,
                        contract::plan::kind_name(p.kind),
                        p.domain
                    )
                })
            })
            .collect();
        let partitioned = contract.partition.as_ref().map_or(String::new(), |p| {
            format!(
                " (partitioned by {} on {}, {})",
                p.every.name(),
                p.column,
                p.retention_months
                    .map_or("kept".to_string(), |months| format!("kept {months} months"))
            )
        });
        lines.push(format!(
            "contract {} version {}: {} columns into {}{partitioned}, taking {route}; masked: {}",
            contract.name,
            contract.version,
            contract.columns.len(),
            contract.table,
            if masked.is_empty() {
                "none".to_string()
            } else {
                masked.join(", ")
            }
        ));
    }
    lines.push(format!("ok: {} contract(s) checked", plan.contracts.len()));
    lines.join("\n")
}

/// `veil migrate --contract`: veil's schema and each contract's table.
pub async fn migrate(
    database: &mut Database,
    plan: &Plan,
    policy: &crate::postgres::maintain::HousekeepingPolicy,
) -> anyhow::Result<()> {
    let changes = contract_sql::migrate_contracts(database.client().await?, plan).await?;
    for (table, change) in changes {
        let what = match change {
            TableChange::Created => "created, with analyst indexes".to_string(),
            TableChange::Unchanged => "already there, as the contract says".to_string(),
            TableChange::Added(columns) => format!("added column(s) {}", columns.join(", ")),
        };
        println!("table {table}: {what}");
    }
    println!("schema ready on {}", database.endpoint());
    let client = database.client().await?;
    let lacking = crate::postgres::maintain::missing_rights(client, policy).await?;
    if lacking.is_empty() {
        let done =
            crate::postgres::maintain::maintain(client, policy, std::time::Duration::ZERO).await?;
        println!("{}", crate::postgres::maintain::describe(&done));
    }
    Ok(())
}
