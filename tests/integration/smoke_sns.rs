//! moto delivers an SNS publish with message attributes to a subscribed SQS queue.

use std::time::Duration;

use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::servers;

#[tokio::test]
async fn publishes_to_a_topic_and_receives_on_a_subscribed_queue() {
    let sns = aws_sdk_sns::Client::new(&servers::aws_config("AWS_ENDPOINT_URL_SNS").await);
    let sqs = aws_sdk_sqs::Client::new(&servers::aws_config("AWS_ENDPOINT_URL_SQS").await);
    let name = servers::unique_name("rcfd-smoke");

    let topic_arn = sns.create_topic().name(&name).send().await.expect("CreateTopic").topic_arn.expect("topic ARN");
    let queue_url =
        sqs.create_queue().queue_name(&name).send().await.expect("CreateQueue").queue_url.expect("queue URL");
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("queue ARN");
    sns.subscribe().topic_arn(&topic_arn).protocol("sqs").endpoint(&queue_arn).send().await.expect("Subscribe");

    let attribute = |value: &str| {
        MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("attribute")
    };
    sns.publish()
        .topic_arn(&topic_arn)
        .message(r#"{"entity":"DemoSensor","anomaly_score":3.2}"#)
        .message_attributes("detector", attribute("iot"))
        .message_attributes("entity", attribute("DemoSensor"))
        .message_attributes("severity", attribute("high"))
        .send()
        .await
        .expect("Publish");

    let body = servers::poll_until("the alert on the queue", Duration::from_secs(20), || async {
        let received = sqs.receive_message().queue_url(&queue_url).wait_time_seconds(1).send().await.ok()?;
        received.messages?.into_iter().next()?.body
    })
    .await;
    // Without raw delivery the queue gets SNS's JSON envelope with the attributes.
    let envelope: serde_json::Value = serde_json::from_str(&body).expect("SNS envelope JSON");
    assert_eq!(envelope["TopicArn"], topic_arn.as_str());
    assert_eq!(envelope["Message"], r#"{"entity":"DemoSensor","anomaly_score":3.2}"#);
    assert_eq!(envelope["MessageAttributes"]["entity"]["Value"], "DemoSensor");
    assert_eq!(envelope["MessageAttributes"]["severity"]["Value"], "high");
    assert_eq!(envelope["MessageAttributes"]["detector"]["Value"], "iot");

    sns.delete_topic().topic_arn(&topic_arn).send().await.expect("DeleteTopic");
    sqs.delete_queue().queue_url(&queue_url).send().await.expect("DeleteQueue");
}
