//! moto's DynamoDB honours conditional writes, the primitive the shard leases rely on:
//! a lease is taken only if nobody holds it, and renewed only at the counter we read.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};

use crate::servers;

#[tokio::test]
async fn conditional_put_takes_a_lease_once() {
    let ddb = aws_sdk_dynamodb::Client::new(&servers::aws_config("AWS_ENDPOINT_URL_DYNAMODB").await);
    let table = servers::unique_name("rcfd-smoke-leases");
    ddb.create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .key_schema(
            KeySchemaElement::builder().attribute_name("leaseKey").key_type(KeyType::Hash).build().expect("key"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable");

    let take = |owner: &str| {
        ddb.put_item()
            .table_name(&table)
            .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .item("leaseOwner", AttributeValue::S(owner.into()))
            .item("leaseCounter", AttributeValue::N("1".into()))
            .condition_expression("attribute_not_exists(leaseKey)")
    };
    take("worker-a").send().await.expect("the first worker takes the free lease");
    let second = take("worker-b").send().await;
    let err = second.expect_err("a held lease must not be taken again");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()),
        "expected ConditionalCheckFailed, got {err:?}"
    );

    // Renewal succeeds only at the counter the owner last saw.
    let renew = |seen: &str| {
        ddb.update_item()
            .table_name(&table)
            .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .update_expression("SET leaseCounter = leaseCounter + :one")
            .condition_expression("leaseCounter = :seen AND leaseOwner = :me")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":seen", AttributeValue::N(seen.into()))
            .expression_attribute_values(":me", AttributeValue::S("worker-a".into()))
    };
    renew("1").send().await.expect("renew at counter 1");
    assert!(renew("1").send().await.is_err(), "a stale counter must not renew");

    let item = ddb
        .get_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("the lease item");
    assert_eq!(item.get("leaseOwner"), Some(&AttributeValue::S("worker-a".into())));
    assert_eq!(item.get("leaseCounter"), Some(&AttributeValue::N("2".into())));

    ddb.delete_table().table_name(&table).send().await.expect("DeleteTable");
}

#[tokio::test]
async fn an_item_that_is_not_a_lease_does_not_hide_the_others() {
    use rcfd::source::kinesis::lease::LeaseTable;
    let ddb = aws_sdk_dynamodb::Client::new(&servers::aws_config("AWS_ENDPOINT_URL_DYNAMODB").await);
    let table = servers::unique_name("rcfd-corrupt-leases");
    let leases = LeaseTable::new(ddb.clone(), table.clone(), "worker-a".into());
    leases.ensure_table().await.expect("table");
    let shards = [("shardId-000000000000".to_owned(), Vec::new()), ("shardId-000000000001".to_owned(), Vec::new())];
    leases.add_missing(&shards, &[]).await.expect("leases");
    // A hand edit: a counter that is no lease counter.
    ddb.put_item()
        .table_name(&table)
        .item("leaseKey", AttributeValue::S("shardId-000000000001".into()))
        .item("leaseCounter", AttributeValue::N("-1".into()))
        .send()
        .await
        .expect("PutItem");
    let listed: Vec<String> = leases.list().await.expect("the other leases").into_iter().map(|l| l.shard).collect();
    assert_eq!(listed, vec!["shardId-000000000000"]);
}
