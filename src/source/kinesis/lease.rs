//! Shard leases and checkpoints in a DynamoDB table, in the Kinesis Client Library's
//! scheme: one item per shard keyed by `leaseKey` (the shard id) with `leaseOwner`,
//! `leaseCounter`, `checkpoint` and `parentShardIds`. Every change is a conditional
//! write on the counter (and owner) this instance last saw, so two instances can never
//! both believe they hold a shard; a lease whose counter has not moved for the lease
//! duration is expired and may be taken.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;

/// The checkpoint of a shard read to its end (after a split or merge).
pub const SHARD_END: &str = "SHARD_END";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else changed the lease since we read it: it is no longer ours to use.
    #[error("lease of {shard} was changed by another instance")]
    Lost { shard: String },
    #[error("lease table {table}: {reason}")]
    Table { table: String, reason: String },
    #[error("lease item {shard}: {reason}")]
    Corrupt { shard: String, reason: String },
}

/// One shard's lease as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: String,
    pub owner: Option<String>,
    pub counter: u64,
    /// The last sequence number whose record every sink has, or [`SHARD_END`].
    pub checkpoint: Option<String>,
    pub parents: Vec<String>,
}

impl Lease {
    pub fn is_finished(&self) -> bool {
        self.checkpoint.as_deref() == Some(SHARD_END)
    }
}

pub struct LeaseTable {
    client: Client,
    table: String,
    owner: String,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl LeaseTable {
    pub fn new(client: Client, table: String, owner: String) -> Self {
        LeaseTable { client, table, owner }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn failed(&self, reason: impl std::fmt::Display) -> LeaseError {
        LeaseError::Table { table: self.table.clone(), reason: reason.to_string() }
    }

    /// A conditional write that did not hold means the lease moved on without us.
    fn classify<E, R>(&self, shard: &str, e: SdkError<E, R>) -> LeaseError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let conditional = e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException");
        if conditional {
            LeaseError::Lost { shard: shard.to_owned() }
        } else {
            self.failed(aws_sdk_dynamodb::error::DisplayErrorContext(e))
        }
    }

    /// Creates the table if it does not exist and waits until it is active.
    pub async fn ensure_table(&self) -> Result<(), LeaseError> {
        let exists = self.client.describe_table().table_name(&self.table).send().await;
        if exists.is_err() {
            let created = self
                .client
                .create_table()
                .table_name(&self.table)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("leaseKey")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| self.failed(e))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("leaseKey")
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| self.failed(e))?,
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await;
            if let Err(e) = created {
                // Another instance may have created it in the meantime.
                let in_use = e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception());
                if !in_use {
                    return Err(self.failed(aws_sdk_dynamodb::error::DisplayErrorContext(e)));
                }
            }
        }
        for _ in 0..120 {
            let described = self.client.describe_table().table_name(&self.table).send().await;
            let status = described.ok().and_then(|d| d.table).and_then(|t| t.table_status);
            if status == Some(TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Err(self.failed("did not become ACTIVE within 60 s"))
    }

    /// Adds a free lease for each shard that has none yet.
    pub async fn add_missing(&self, shards: &[(String, Vec<String>)], known: &[Lease]) -> Result<(), LeaseError> {
        for (shard, parents) in shards {
            if known.iter().any(|l| &l.shard == shard) {
                continue;
            }
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("leaseKey", s(shard))
                .item("leaseCounter", n(0))
                .condition_expression("attribute_not_exists(leaseKey)");
            if !parents.is_empty() {
                put = put.item("parentShardIds", AttributeValue::Ss(parents.clone()));
            }
            if let Err(e) = put.send().await {
                match self.classify(shard, e) {
                    // Another instance added it first: fine.
                    LeaseError::Lost { .. } => {}
                    other => return Err(other),
                }
            }
        }
        Ok(())
    }

    /// Every lease, read consistently. An item that is not a lease (edited by hand,
    /// written by another tool) is skipped with a warning: failing the whole list
    /// would stop every shard, not only that one.
    pub async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.failed(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            for item in page.items.unwrap_or_default() {
                match parse(&item) {
                    Ok(lease) => leases.push(lease),
                    Err(e) => tracing::warn!(table = %self.table, error = %e, "skipping an item of the lease table"),
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(leases);
            }
        }
    }

    /// Takes `lease` (free or expired) at the counter we saw.
    pub async fn take(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(&lease.shard))
            .update_expression("SET leaseOwner = :me, leaseCounter = :next")
            .condition_expression("leaseCounter = :seen")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":next", n(lease.counter + 1))
            .expression_attribute_values(":seen", n(lease.counter))
            .send()
            .await
            .map_err(|e| self.classify(&lease.shard, e))?;
        Ok(Lease { owner: Some(self.owner.clone()), counter: lease.counter + 1, ..lease.clone() })
    }

    /// Renews our lease; fails with [`LeaseError::Lost`] if someone took it.
    pub async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(&lease.shard))
            .update_expression("SET leaseCounter = :next")
            .condition_expression("leaseCounter = :seen AND leaseOwner = :me")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":next", n(lease.counter + 1))
            .expression_attribute_values(":seen", n(lease.counter))
            .send()
            .await
            .map_err(|e| self.classify(&lease.shard, e))?;
        Ok(Lease { counter: lease.counter + 1, ..lease.clone() })
    }

    /// Records `sequence` as delivered, if the lease is still ours (whatever its counter:
    /// renewals move it concurrently).
    pub async fn checkpoint(&self, shard: &str, sequence: &str) -> Result<(), LeaseError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(shard))
            .update_expression("SET checkpoint = :sequence")
            .condition_expression("leaseOwner = :me")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":sequence", s(sequence))
            .send()
            .await
            .map_err(|e| self.classify(shard, e))?;
        Ok(())
    }

    /// Gives the lease up (at shutdown), so another instance can take it at once.
    pub async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("leaseKey", s(&lease.shard))
            .update_expression("REMOVE leaseOwner SET leaseCounter = leaseCounter + :one")
            .condition_expression("leaseOwner = :me")
            .expression_attribute_values(":me", s(&self.owner))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| self.classify(&lease.shard, e))?;
        Ok(())
    }
}

fn parse(item: &std::collections::HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
    let shard = match item.get("leaseKey") {
        Some(AttributeValue::S(shard)) => shard.clone(),
        _ => return Err(LeaseError::Corrupt { shard: "?".into(), reason: "no leaseKey".into() }),
    };
    let counter = match item.get("leaseCounter") {
        Some(AttributeValue::N(text)) => text
            .parse()
            .map_err(|_| LeaseError::Corrupt { shard: shard.clone(), reason: format!("leaseCounter = {text}") })?,
        _ => 0,
    };
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    let parents = match item.get("parentShardIds") {
        Some(AttributeValue::Ss(parents)) => parents.clone(),
        _ => Vec::new(),
    };
    Ok(Lease { owner: text("leaseOwner"), checkpoint: text("checkpoint"), counter, parents, shard })
}
