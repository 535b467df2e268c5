//! The API's wire types ([`cps_api`]) for records of the appliance's own modules (nodes, audit
//! anchors). The registry's, the cards', the CA's and the audit repository's conversions live
//! next to their types (`cps_enrol`, `cps_ca::wire`, `cps_atna`). Each conversion destructures
//! its source completely, so a field added to a record does not compile until the API says
//! whether (and how) it is shown; the tests check that the answers stay byte-identical.

use cps_api as w;

impl From<&crate::nodes::NodeRecord> for w::NodeView {
    fn from(r: &crate::nodes::NodeRecord) -> w::NodeView {
        let crate::nodes::NodeRecord {
            name,
            structure_id,
            status,
            certificates,
            enrolled_at,
            enrolled_by,
        } = r.clone();
        w::NodeView {
            name,
            structure_id,
            status,
            certificates,
            enrolled_at,
            enrolled_by,
        }
    }
}

/// The node service's request from the API's.
pub fn node_request(r: w::NodeEnrollRequest) -> crate::nodes::NodeEnrollRequest {
    let w::NodeEnrollRequest {
        name,
        csr,
        organisation,
        dns,
        ip,
    } = r;
    crate::nodes::NodeEnrollRequest {
        name,
        csr,
        organisation: cps_ca::wire::organisation_identity(organisation),
        dns,
        ip,
    }
}

impl From<&crate::anchor::AnchorRecord> for w::AnchorView {
    fn from(r: &crate::anchor::AnchorRecord) -> w::AnchorView {
        let crate::anchor::AnchorRecord {
            seq,
            head,
            time,
            anchored_at,
            checkpoint,
        } = r.clone();
        w::AnchorView {
            seq,
            head,
            time,
            anchored_at,
            checkpoint,
        }
    }
}

impl From<&crate::anchor::AnchorSet> for w::AnchorSetView {
    fn from(r: &crate::anchor::AnchorSet) -> w::AnchorSetView {
        let crate::anchor::AnchorSet {
            node,
            nodes,
            latest,
            history,
            lost,
            certificates,
        } = r;
        w::AnchorSetView {
            node: node.clone(),
            nodes: nodes
                .iter()
                .map(|n| {
                    let crate::cluster::NodeRecord {
                        node,
                        host,
                        started_at,
                    } = n.clone();
                    w::ClusterNodeView {
                        node,
                        host,
                        started_at,
                    }
                })
                .collect(),
            latest: latest.as_ref().map(Into::into),
            history: history.iter().map(Into::into).collect(),
            lost: lost
                .iter()
                .map(|l| {
                    let crate::anchor::LostAnchor {
                        anchor,
                        found_at,
                        log_records,
                        log_last_checkpoint,
                    } = l;
                    w::LostAnchorView {
                        anchor: anchor.into(),
                        found_at: *found_at,
                        log_records: *log_records,
                        log_last_checkpoint: *log_last_checkpoint,
                    }
                })
                .collect(),
            certificates: certificates
                .iter()
                .map(|c| {
                    let crate::anchor::KeyCertificate {
                        key_id,
                        ca,
                        serial,
                        profile,
                        pem,
                        status,
                        revocation_time,
                    } = c.clone();
                    w::KeyCertificateView {
                        key_id,
                        ca,
                        serial,
                        profile,
                        pem,
                        status,
                        revocation_time,
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// The wire type serialises exactly as the record it stands for.
    fn same_json<A: Serialize, B: Serialize>(record: &A, wire: &B) {
        assert_eq!(
            serde_json::to_string(record).unwrap(),
            serde_json::to_string(wire).unwrap()
        );
    }

    #[test]
    fn nodes_and_anchors_keep_their_wire_shape() {
        let n = crate::nodes::NodeRecord {
            name: "n.example".into(),
            structure_id: "S".into(),
            status: "active".into(),
            certificates: vec!["c:01".into()],
            enrolled_at: 1,
            enrolled_by: "operator:x".into(),
        };
        same_json(&n, &w::NodeView::from(&n));
        let a = crate::anchor::AnchorRecord {
            seq: 1,
            head: "00".into(),
            time: 2,
            anchored_at: 3,
            checkpoint: "AA==".into(),
        };
        let set = crate::anchor::AnchorSet {
            node: "n1".into(),
            nodes: vec![crate::cluster::NodeRecord {
                node: "n1".into(),
                host: "h".into(),
                started_at: 7,
            }],
            latest: Some(a.clone()),
            history: vec![a.clone()],
            lost: vec![crate::anchor::LostAnchor {
                anchor: a,
                found_at: 4,
                log_records: 5,
                log_last_checkpoint: Some(6),
            }],
            certificates: vec![crate::anchor::KeyCertificate {
                key_id: "ab".into(),
                ca: "c".into(),
                serial: "01".into(),
                profile: "p".into(),
                pem: "x".into(),
                status: "valid".into(),
                revocation_time: None,
            }],
        };
        same_json(&set, &w::AnchorSetView::from(&set));
        let empty = crate::anchor::AnchorSet::default();
        same_json(&empty, &w::AnchorSetView::from(&empty));
    }

    /// Node requests the service took before read the same through the API's types.
    #[test]
    fn node_requests_convert_to_the_service_s() {
        let org = r#"{"state":"s","name":"n","structure_id":"1","common_name":"c"}"#;
        let body = format!(r#"{{"name":"n1","csr":"x","organisation":{org},"ip":["10.0.0.1"]}}"#);
        let direct: crate::nodes::NodeEnrollRequest = serde_json::from_str(&body).unwrap();
        let via: w::NodeEnrollRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(
            serde_json::to_string(&direct).unwrap(),
            serde_json::to_string(&node_request(via)).unwrap()
        );
    }
}
