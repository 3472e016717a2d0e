//! The CloudFormation stack (deploy/cloudformation/veil.yaml), deployed on
//! LocalStack 4.7: created, its outputs read, its keyring secret filled by
//! `veil keys new --secret-id`, its queue drained by veil with that keyring
//! into the local Postgres (LocalStack accepts the RDS and ECS resources
//! without creating them), and a message received too often moved to its
//! dead-letter queue by the queue's redrive policy.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use veil::sqs::ReceiveRequest;

use crate::fixtures::*;

const TEMPLATE: &str = include_str!("../../deploy/cloudformation/veil.yaml");

/// A request to LocalStack signed for `service` with the test credentials.
fn signed(
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> reqwest::RequestBuilder {
    let credentials = aws_credential_types::Credentials::new("test", "test", None, None, "test");
    let signature = veil::aws::sigv4::sign_headers(
        &credentials,
        &veil::aws::sigv4::Scope {
            service,
            region: "us-east-1",
        },
        &veil::aws::sigv4::Request {
            method,
            url,
            headers,
            body,
        },
        SystemTime::now(),
    );
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    for (name, value) in signature {
        request = request.header(name, value);
    }
    request
}

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
    let request = signed(
        service,
        "POST",
        &endpoint,
        &[("content-type", content_type)],
        body.as_bytes(),
    );
    let response = request.body(body).send().await.expect("LocalStack");
    let status = response.status();
    let reply = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "{service} {params:?}: {status} {reply}"
    );
    reply
}

/// A signed GET of a REST-JSON API of LocalStack's (`path` under the endpoint).
async fn rest_get(service: &str, path: &str) -> serde_json::Value {
    let url = format!("{}{path}", modern_endpoint());
    let request = signed(service, "GET", &url, &[], b"");
    let response = request.send().await.expect("LocalStack");
    let status = response.status();
    let reply = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "{service} GET {path}: {status} {reply}"
    );
    serde_json::from_str(&reply).expect(&reply)
}

/// The inline policy `policy` of IAM role `role`, and its trust policy.
async fn role_policies(role: &str, policy: &str) -> (serde_json::Value, serde_json::Value) {
    let inline = query_api(
        "iam",
        "2010-05-08",
        &[
            ("Action", "GetRolePolicy"),
            ("RoleName", role),
            ("PolicyName", policy),
        ],
    )
    .await;
    let described = query_api(
        "iam",
        "2010-05-08",
        &[("Action", "GetRole"), ("RoleName", role)],
    )
    .await;
    (
        json_document(&first(&inline, "PolicyDocument").expect("an inline policy")),
        json_document(&first(&described, "AssumeRolePolicyDocument").expect("a trust policy")),
    )
}

/// The document of the managed policy attached to IAM role `role` (veil's).
async fn attached_policy(role: &str) -> serde_json::Value {
    let attached = query_api(
        "iam",
        "2010-05-08",
        &[("Action", "ListAttachedRolePolicies"), ("RoleName", role)],
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
    json_document(&first(&policy_version, "Document").expect("a policy document"))
}

/// The actions a policy document allows, in order.
fn allowed_actions(policy: &serde_json::Value) -> Vec<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|statement| match &statement["Action"] {
            serde_json::Value::Array(actions) => actions.clone(),
            action => vec![action.clone()],
        })
        .filter_map(|action| action.as_str().map(String::from))
        .collect()
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
    let (status, described) = deploy_stack(name, parameters, false).await;
    if status == "CREATE_COMPLETE" {
        return outputs(&described);
    }
    let events = cloudformation(&[("Action", "DescribeStackEvents"), ("StackName", name)]).await;
    panic!("stack {name}: {status}\n{events}");
}

/// Creates the stack and waits until it is no longer in progress; its
/// final status and the DescribeStacks reply. `keep`: no rollback, so what
/// was created stays when a resource fails.
async fn deploy_stack(name: &str, parameters: &[(&str, &str)], keep: bool) -> (String, String) {
    let mut params: Vec<(String, String)> = vec![
        ("Action".into(), "CreateStack".into()),
        ("StackName".into(), name.into()),
        ("TemplateBody".into(), TEMPLATE.into()),
        ("Capabilities.member.1".into(), "CAPABILITY_IAM".into()),
        ("DisableRollback".into(), keep.to_string()),
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
        if !status.ends_with("IN_PROGRESS") {
            return (status, described);
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
        "MaintainRoleArn",
        "MaintainScheduleName",
    ] {
        assert!(outputs.contains_key(output), "{output} in {outputs:?}");
    }
    // The owner's housekeeping: a daily schedule that runs the maintain
    // task, whose role reads the owner's database secret and nothing else.
    let schedule = rest_get(
        "scheduler",
        &format!("/schedules/{}", outputs["MaintainScheduleName"]),
    )
    .await;
    assert_eq!(schedule["ScheduleExpression"], "cron(17 3 * * ? *)");
    assert_eq!(schedule["State"], "ENABLED");
    let target = &schedule["Target"];
    assert_eq!(target["EcsParameters"]["LaunchType"], "FARGATE");
    // LocalStack accepts ECS resources without creating them, so the task
    // definition's ARN reads "unknown" here; real AWS gives the ARN.
    assert!(target["EcsParameters"]["TaskDefinitionArn"].is_string());
    assert!(
        target["Arn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(&format!(":cluster/{name}"))),
        "{target}"
    );
    let scheduler_role = target["RoleArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let (may, trust) = role_policies(scheduler_role, "run-maintain").await;
    assert_eq!(allowed_actions(&may), ["ecs:RunTask", "iam:PassRole"]);
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "scheduler.amazonaws.com"
    );
    let maintain_role = outputs["MaintainRoleArn"].rsplit('/').next().unwrap();
    let (may, _) = role_policies(maintain_role, "owner-secret").await;
    assert_eq!(allowed_actions(&may), ["secretsmanager:GetSecretValue"]);
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
            message_attributes: false,
            first_receive_time: false,
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
    for output in [
        "QueueUrl",
        "KeyArn",
        "KeyringSecretArn",
        "TaskRoleArn",
        "MaintainRoleArn",
    ] {
        assert!(outputs.contains_key(output), "{output} in {outputs:?}");
    }
    // The maintain CronJob's role: its own ServiceAccount, the owner's
    // secret only.
    let maintain_role = outputs["MaintainRoleArn"].rsplit('/').next().unwrap();
    let (may, trust) = role_policies(maintain_role, "owner-secret").await;
    assert_eq!(allowed_actions(&may), ["secretsmanager:GetSecretValue"]);
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"][format!("{issuer}:sub")],
        "system:serviceaccount:veil:veil-maintain"
    );
    for ecs_only in ["ClusterName", "LogGroupName", "MaintainScheduleName"] {
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
    let policy = attached_policy(&role).await;
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

/// The physical id (a role's name, a schedule's name) of a stack's resource.
async fn physical_id(stack: &str, logical: &str) -> String {
    let reply = cloudformation(&[
        ("Action", "DescribeStackResource"),
        ("StackName", stack),
        ("LogicalResourceId", logical),
    ])
    .await;
    first(&reply, "PhysicalResourceId").unwrap_or_else(|| panic!("{logical}: {reply}"))
}

#[test]
fn on_lambda_the_queue_hides_a_batch_six_times_as_long_as_the_function_may_run() {
    let allowed = TEMPLATE
        .split("  LambdaTimeoutSecs:")
        .nth(1)
        .and_then(|rest| rest.split("AllowedValues: [").nth(1))
        .and_then(|rest| rest.split(']').next())
        .unwrap();
    let timeouts: Vec<u32> = allowed.split(", ").map(|t| t.parse().unwrap()).collect();
    for timeout in &timeouts {
        let entry = format!("    \"{timeout}\": {{Secs: {}}}", timeout * 6);
        assert!(
            TEMPLATE.contains(&entry),
            "no {entry:?} in LambdaQueueVisibility"
        );
    }
    assert_eq!(TEMPLATE.matches("{Secs: ").count(), timeouts.len());
}

#[tokio::test]
async fn on_lambda_the_stack_sizes_the_queue_and_grants_the_mapping_only_its_calls_as_far_as_localstack_creates(
) {
    let name = format!("veil-fn-{}", rand::random::<u32>() % 100_000);
    let (status, _) = deploy_stack(
        &name,
        &[
            ("Name", &name),
            ("Platform", "lambda"),
            ("LambdaTimeoutSecs", "60"),
        ],
        true,
    )
    .await;
    // LocalStack needs Docker to create a function: the functions (last in
    // the template) fail here, and only they; everything else is created.
    let events = cloudformation(&[("Action", "DescribeStackEvents"), ("StackName", &name)]).await;
    let failed: std::collections::BTreeSet<String> = events
        .split("<member>")
        .filter(|event| event.contains("<ResourceStatus>CREATE_FAILED</ResourceStatus>"))
        .filter_map(|event| first(event, "LogicalResourceId"))
        .filter(|id| id != &name)
        .collect();
    assert!(
        status == "CREATE_COMPLETE"
            || failed
                .iter()
                .all(|id| ["Function", "EventSourceMapping", "MaintainFunction"]
                    .contains(&id.as_str())),
        "{status}: {failed:?}\n{events}"
    );

    // The queue hides a batch six times the function's timeout.
    let queue_url = format!("{}/000000000000/{name}-login-queue", modern_endpoint());
    let attributes = query_api(
        "sqs",
        "2012-11-05",
        &[
            ("Action", "GetQueueAttributes"),
            ("QueueUrl", &queue_url),
            ("AttributeName.1", "VisibilityTimeout"),
        ],
    )
    .await;
    assert!(attributes.contains("<Value>360</Value>"), "{attributes}");

    // The execution role: the mapping's three calls and the logs, inline;
    // veil's own policy without any SQS call.
    let role = physical_id(&name, "LambdaRole").await;
    let (may, trust) = role_policies(&role, "event-source").await;
    assert_eq!(
        allowed_actions(&may),
        [
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "logs:CreateLogStream",
            "logs:PutLogEvents"
        ]
    );
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "lambda.amazonaws.com"
    );
    let veil_actions = allowed_actions(&attached_policy(&role).await);
    assert!(!veil_actions.is_empty());
    assert!(
        veil_actions
            .iter()
            .all(|action| !action.starts_with("sqs:")),
        "{veil_actions:?}"
    );

    // The owner's daily pass invokes the maintain function, and only it.
    let schedule = rest_get(
        "scheduler",
        &format!(
            "/schedules/{}",
            physical_id(&name, "LambdaMaintainSchedule").await
        ),
    )
    .await;
    assert_eq!(schedule["ScheduleExpression"], "cron(17 3 * * ? *)");
    assert!(
        schedule["Target"]["Arn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(&format!(":function:{name}-maintain"))),
        "{schedule}"
    );
    let scheduler_role = physical_id(&name, "LambdaMaintainSchedulerRole").await;
    let (may, _) = role_policies(&scheduler_role, "invoke-maintain").await;
    assert_eq!(allowed_actions(&may), ["lambda:InvokeFunction"]);
    let maintain_role = physical_id(&name, "LambdaMaintainRole").await;
    let (may, _) = role_policies(&maintain_role, "owner-secret").await;
    assert_eq!(
        allowed_actions(&may),
        [
            "secretsmanager:GetSecretValue",
            "logs:CreateLogStream",
            "logs:PutLogEvents"
        ]
    );

    cloudformation(&[("Action", "DeleteStack"), ("StackName", &name)]).await;
}
