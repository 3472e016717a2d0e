//! The CloudFormation stack (deploy/cloudformation/veil.yaml), deployed on
//! LocalStack 4.7: created, its outputs read, its keyring secret filled by
//! `veil keys new --secret-id`, its queue drained by veil with that keyring
//! into the local Postgres (LocalStack accepts the RDS and ECS resources
//! without creating them), and a message received too often moved to its
//! dead-letter queue by the queue's redrive policy.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use veil::sqs::ReceiveRequest;

use crate::cli::{migrated_db, text, veil};
use crate::helpers::*;

const TEMPLATE: &str = include_str!("../../deploy/cloudformation/veil.yaml");

/// One query-protocol call to LocalStack's `service` (API `version`); the XML reply.
async fn query_api(service: &str, version: &str, params: &[(&str, &str)]) -> String {
    let endpoint = format!("{}/", modern_endpoint());
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("Version", version);
    for (name, value) in params {
        form.append_pair(name, value);
    }
    let body = form.finish();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let credentials = aws_credential_types::Credentials::new("test", "test", None, None, "test");
    let signature = veil::sigv4::sign_headers(
        &credentials,
        &veil::sigv4::Scope {
            service,
            region: "us-east-1",
        },
        &veil::sigv4::Request {
            method: "POST",
            url: &endpoint,
            headers: &[("content-type", content_type)],
            body: body.as_bytes(),
        },
        SystemTime::now(),
    );
    let mut request = reqwest::Client::new()
        .post(&endpoint)
        .header("content-type", content_type);
    for (name, value) in signature {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await.expect("LocalStack");
    let status = response.status();
    let reply = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "{service} {params:?}: {status} {reply}"
    );
    reply
}

async fn cloudformation(params: &[(&str, &str)]) -> String {
    query_api("cloudformation", "2010-05-15", params).await
}

/// The text of the first `tag` element of a reply.
fn first(xml: &str, tag: &str) -> Option<String> {
    let document = roxmltree::Document::parse(xml).ok()?;
    let found = document
        .descendants()
        .find(|node| node.has_tag_name(tag))
        .and_then(|node| node.text().map(String::from));
    found
}

fn outputs(xml: &str) -> HashMap<String, String> {
    let document = roxmltree::Document::parse(xml).unwrap();
    document
        .descendants()
        .filter(|node| node.has_tag_name("Outputs"))
        .flat_map(|outputs| outputs.children().filter(|n| n.is_element()))
        .filter_map(|member| {
            let field = |tag: &str| {
                member
                    .children()
                    .find(|n| n.has_tag_name(tag))
                    .and_then(|n| n.text())
                    .map(String::from)
            };
            Some((
                field("OutputKey")?,
                field("OutputValue").unwrap_or_default(),
            ))
        })
        .collect()
}

/// Creates the stack and waits for it; returns its outputs.
async fn create_stack(name: &str, parameters: &[(&str, &str)]) -> HashMap<String, String> {
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), "CreateStack".into()),
        ("StackName".into(), name.into()),
        ("TemplateBody".into(), TEMPLATE.into()),
        ("Capabilities.member.1".into(), "CAPABILITY_IAM".into()),
    ];
    for (index, (key, value)) in parameters.iter().enumerate() {
        let n = index + 1;
        params.push((
            format!("Parameters.member.{n}.ParameterKey"),
            key.to_string(),
        ));
        params.push((
            format!("Parameters.member.{n}.ParameterValue"),
            value.to_string(),
        ));
    }
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    cloudformation(&params).await;
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let described = cloudformation(&[("Action", "DescribeStacks"), ("StackName", name)]).await;
        let status = first(&described, "StackStatus").unwrap_or_default();
        match status.as_str() {
            "CREATE_COMPLETE" => return outputs(&described),
            status if status.ends_with("IN_PROGRESS") => {}
            failed => {
                let events =
                    cloudformation(&[("Action", "DescribeStackEvents"), ("StackName", name)]).await;
                panic!("stack {name}: {failed}\n{events}");
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stack {name} still {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_stack_deploys_veil_drains_its_queue_and_a_poison_message_reaches_its_dead_letter_queue(
) {
    let name = format!("veil-it-{}", rand::random::<u32>() % 100_000);
    let outputs = create_stack(&name, &[("Name", &name), ("MaxReceiveCount", "2")]).await;
    for output in [
        "QueueUrl",
        "DeadLetterQueueUrl",
        "KeyArn",
        "KeyringSecretArn",
        "DatabaseSecretArn",
        "TaskRoleArn",
    ] {
        assert!(outputs.contains_key(output), "{output} in {outputs:?}");
    }
    let endpoint = modern_endpoint();
    let aws_env = [("AWS_ENDPOINT_URL", endpoint.as_str())];

    // The keyring, sealed by the stack's KMS key, into the stack's secret.
    let stored = veil(
        &[
            "keys",
            "new",
            "--kms-key-id",
            &outputs["KeyArn"],
            "--secret-id",
            &outputs["KeyringSecretArn"],
        ],
        "",
        &aws_env,
    );
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    let again = veil(
        &["keys", "new", "--secret-id", &outputs["KeyringSecretArn"]],
        "",
        &aws_env,
    );
    assert_eq!(again.status.code(), Some(2), "a keyring is never replaced");

    // A message received twice (the stack's MaxReceiveCount) and not
    // recorded, then ordinary events.
    let queue = TestQueue::attach(&outputs["QueueUrl"]).await;
    queue.send(&["{\"poison\": true}".to_string()]).await;
    for _ in 0..2 {
        let request = ReceiveRequest {
            max_messages: 1,
            wait_secs: 1,
            visibility_timeout_secs: 0,
        };
        assert_eq!(queue.client.receive(request).await.unwrap().len(), 1);
    }
    let events = queue.seed(5, 0.0, 141).await;
    let db = migrated_db().await;

    let output = veil(
        &[
            "run",
            "--until-empty",
            "--queue-url",
            &outputs["QueueUrl"],
            "--key-secret-id",
            &outputs["KeyringSecretArn"],
            "--database-url",
            &db.url,
        ],
        "",
        &aws_env,
    );

    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("keyring opened with KMS"), "{stderr}");
    assert!(stderr.contains("redrive policy"), "{stderr}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins").await,
        events.len() as i64
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 0);
    let dead_letters = TestQueue::attach(&outputs["DeadLetterQueueUrl"]).await;
    wait_until("the poison message in the dead-letter queue", || async {
        dead_letters.depth().await.visible == 1
    })
    .await;
    assert_eq!(queue.depth().await, Default::default());

    cloudformation(&[("Action", "DeleteStack"), ("StackName", &name)]).await;
}

/// A policy document from IAM (URL-encoded JSON). The trust policy, given to
/// CloudFormation as text (its condition keys name the issuer), comes back
/// from LocalStack as a JSON string holding the JSON; real CloudFormation
/// parses it.
fn json_document(encoded: &str) -> serde_json::Value {
    let text: String = url::form_urlencoded::parse(format!("d={encoded}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    match serde_json::from_str(&text).expect(&text) {
        serde_json::Value::String(inner) => serde_json::from_str(&inner).expect(&inner),
        document => document,
    }
}

#[tokio::test]
async fn on_kubernetes_the_stack_makes_an_irsa_role_for_veils_service_account_and_no_ecs() {
    let name = format!("veil-k8s-{}", rand::random::<u32>() % 100_000);
    let issuer = "oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF0123456789ABCDEF";
    let outputs = create_stack(
        &name,
        &[
            ("Name", &name),
            ("Platform", "kubernetes"),
            ("KubernetesOidcProvider", issuer),
        ],
    )
    .await;
    for output in ["QueueUrl", "KeyArn", "KeyringSecretArn", "TaskRoleArn"] {
        assert!(outputs.contains_key(output), "{output} in {outputs:?}");
    }
    for ecs_only in ["ClusterName", "LogGroupName"] {
        assert!(!outputs.contains_key(ecs_only), "{ecs_only} in {outputs:?}");
    }

    // The role trusts the cluster's issuer for veil's ServiceAccount only
    // (deploy/k8s: namespace veil, name veil), and carries veil's policy.
    let role = outputs["TaskRoleArn"]
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let reply = query_api(
        "iam",
        "2010-05-08",
        &[("Action", "GetRole"), ("RoleName", &role)],
    )
    .await;
    let trust = json_document(&first(&reply, "AssumeRolePolicyDocument").expect("a trust policy"));
    let statement = &trust["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
    assert_eq!(
        statement["Principal"]["Federated"],
        format!("arn:aws:iam::000000000000:oidc-provider/{issuer}")
    );
    assert_eq!(
        statement["Condition"]["StringEquals"][format!("{issuer}:sub")],
        "system:serviceaccount:veil:veil"
    );
    assert_eq!(
        statement["Condition"]["StringEquals"][format!("{issuer}:aud")],
        "sts.amazonaws.com"
    );
    let attached = query_api(
        "iam",
        "2010-05-08",
        &[("Action", "ListAttachedRolePolicies"), ("RoleName", &role)],
    )
    .await;
    let policy_arn = first(&attached, "PolicyArn").expect("veil's policy attached");
    let policy = query_api(
        "iam",
        "2010-05-08",
        &[("Action", "GetPolicy"), ("PolicyArn", &policy_arn)],
    )
    .await;
    let version = first(&policy, "DefaultVersionId").unwrap();
    let policy_version = query_api(
        "iam",
        "2010-05-08",
        &[
            ("Action", "GetPolicyVersion"),
            ("PolicyArn", &policy_arn),
            ("VersionId", &version),
        ],
    )
    .await;
    let policy = json_document(&first(&policy_version, "Document").expect("a policy document"));
    let sqs_actions = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|statement| statement["Sid"] == "TheLoginQueue")
        .map(|statement| statement["Action"].clone())
        .expect("the queue statement");
    assert_eq!(
        sqs_actions,
        serde_json::json!([
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes"
        ])
    );

    cloudformation(&[("Action", "DeleteStack"), ("StackName", &name)]).await;
}
