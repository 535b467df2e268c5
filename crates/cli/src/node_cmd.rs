//! `cps-trust node enroll|list|show|remove`: IHE ATNA secure nodes, through the API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::client::ApiClient;
use crate::{CliResult, describe_cert, emitln, fail, ip_addresses, read_csr_pem};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Certify a node from its CSR (one `node-tls` certificate, client and server) and register
    /// it: only registered nodes may send to the audit record repository.
    Enroll {
        /// The node's FQDN or IP address (the certificate's CN, always in its SAN).
        #[arg(long)]
        name: String,
        /// PKCS#10 CSR of the node's key (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// Raison sociale of the structure operating the node.
        #[arg(long)]
        org_name: String,
        /// struct_IdNat of that structure.
        #[arg(long)]
        structure_id: String,
        /// Department, e.g. "Paris (75)".
        #[arg(long)]
        state: String,
        /// Further DNS names (repeat).
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses (repeat).
        #[arg(long)]
        ip: Vec<String>,
        /// Write the certificate (PEM) here.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Every registered node.
    List,
    /// One node and its certificates.
    Show { name: String },
    /// Remove a node: it leaves the allowlist and its certificates are revoked.
    Remove { name: String },
}

fn describe_node(n: &cps_api::NodeView) -> String {
    format!(
        "{}\t{}\tstructure {}\tcertificates {}",
        n.name,
        n.status,
        n.structure_id,
        n.certificates.join(", ")
    )
}

pub fn run(api: &ApiClient, cmd: NodeCommand) -> CliResult {
    match cmd {
        NodeCommand::Enroll {
            name,
            csr,
            org_name,
            structure_id,
            state,
            dns,
            ip,
            out,
        } => {
            let body = cps_api::NodeEnrollRequest {
                csr: read_csr_pem(&csr)?,
                organisation: cps_api::OrganisationSubject {
                    state,
                    name: org_name,
                    structure_id,
                    common_name: name.clone(),
                },
                name,
                dns,
                ip: ip_addresses(&ip)?,
            };
            let r: cps_api::NodeEnrolled = api.post("/api/v1/nodes", &body).map_err(fail)?;
            if let Some(p) = out {
                std::fs::write(&p, &r.certificate.pem)
                    .map_err(|e| fail(format!("{}: {e}", p.display())))?;
            }
            emitln(&describe_node(&r.node));
            emitln(&describe_cert(&r.certificate));
        }
        NodeCommand::List => {
            let r: Vec<cps_api::NodeView> = api.get("/api/v1/nodes").map_err(fail)?;
            for n in &r {
                emitln(&describe_node(n));
            }
        }
        NodeCommand::Show { name } => {
            let r: cps_api::NodeView = api.get(&format!("/api/v1/nodes/{name}")).map_err(fail)?;
            emitln(&describe_node(&r));
        }
        NodeCommand::Remove { name } => {
            let r: cps_api::NodeView = api
                .post(
                    &format!("/api/v1/nodes/{name}/remove"),
                    &serde_json::json!({}),
                )
                .map_err(fail)?;
            emitln(&describe_node(&r));
        }
    }
    Ok(ExitCode::SUCCESS)
}
