//! `veil contract show|check|ddl|export`.

use crate::cli::{ContractArgs, ContractCommand};
use crate::contract::{self, Plan};
use crate::postgres::contract_sql;

/// `veil contract ...`.
pub fn run(command: ContractCommand) -> anyhow::Result<()> {
    match command {
        ContractCommand::Show { name } if name == "login" => {
            print!("{}", contract::LOGIN_CONTRACT_YAML)
        }
        ContractCommand::Show { name } => {
            return Err(crate::error::ConfigError(format!(
                "there is no built-in contract {name:?}: the built-in one is login (`veil contract \
                 show login`); your own contracts are files (`veil contract check --contract FILE`)"
            ))
            .into())
        }
        ContractCommand::Check(args) => println!("{}", describe(&*plan_of(&args)?)),
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
            let schema = contract::json_schema::export(&*plan_of(&args.contracts)?);
            println!("{}", serde_json::to_string_pretty(&schema)?);
        }
    }
    Ok(())
}

/// The plan of the arguments, or the built-in login contract.
fn plan_of(args: &ContractArgs) -> anyhow::Result<std::sync::Arc<Plan>> {
    Ok(crate::config::plan_from_args(args)?)
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
                        contract::pii::kind_name(p.kind),
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
