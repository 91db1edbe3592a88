//! `wasi:keyvalue` (store, atomics, batch) and `spoa:agent/expiry` for
//! guests, on the agent's shared [`KvStore`]. A bucket handle names a bucket
//! the operator granted; every call is held to what is left of the guest
//! call's deadline.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Resource;

use super::bindings::{expiry, kv_atomics, kv_batch, kv_store};
use super::state::GuestState;
use crate::kv::{BucketRefusal, KvError, KvStore};

/// An open bucket, as the guest's `bucket` resource.
pub struct Bucket {
    name: Arc<str>,
}

type Answer<T> = wasmtime::Result<Result<T, kv_store::Error>>;

fn to_wit(err: KvError) -> kv_store::Error {
    kv_store::Error::Other(err.to_string())
}

impl GuestState {
    /// The store, the bucket's name and the deadline of a call on `bucket`.
    fn kv_call(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<(KvStore, Arc<str>, Instant)> {
        let name = self.table.get(bucket)?.name.clone();
        Ok((self.kv_store().clone(), name, self.call_deadline()))
    }
}

impl kv_store::Host for GuestState {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        match self.kv_grants.open(&identifier) {
            Ok(name) => Ok(Ok(self.table.push(Bucket { name: name.into() })?)),
            Err(BucketRefusal::Invalid(reason)) => {
                self.log
                    .record(super::log::Level::Debug, &format!("open: {reason}"));
                Ok(Err(kv_store::Error::NoSuchStore))
            }
            Err(BucketRefusal::NotGranted) => {
                self.log.record(
                    super::log::Level::Debug,
                    &format!("open: bucket `{identifier}` is not granted to this guest"),
                );
                Ok(Err(kv_store::Error::AccessDenied))
            }
        }
    }
}

impl kv_store::HostBucket for GuestState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store.get(deadline, &name, &key).await.map_err(to_wit))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .set(deadline, &name, &key, value, None)
            .await
            .map_err(to_wit))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<()> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store.delete(deadline, &name, &key).await.map_err(to_wit))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<bool> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store.exists(deadline, &name, &key).await.map_err(to_wit))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Answer<kv_store::KeyResponse> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .list_keys(deadline, &name, cursor)
            .await
            .map(|page| kv_store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(to_wit))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl kv_atomics::Host for GuestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Answer<u64> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .increment(deadline, &name, &key, delta, None)
            .await
            .map_err(to_wit))
    }
}

impl kv_batch::Host for GuestState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .get_many(deadline, &name, &keys)
            .await
            .map(|values| {
                keys.into_iter()
                    .zip(values)
                    .map(|(key, value)| value.map(|value| (key, value)))
                    .collect()
            })
            .map_err(to_wit))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Answer<()> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .set_many(deadline, &name, key_values)
            .await
            .map_err(to_wit))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .delete_many(deadline, &name, &keys)
            .await
            .map_err(to_wit))
    }
}

impl expiry::Host for GuestState {
    async fn set_with_ttl(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Answer<()> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .set(deadline, &name, &key, value, Some(ttl_ms))
            .await
            .map_err(to_wit))
    }

    async fn increment_within(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
        window_ms: u64,
    ) -> Answer<u64> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .increment(deadline, &name, &key, delta, Some(window_ms))
            .await
            .map_err(to_wit))
    }

    async fn expires_in(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<u64>> {
        let (store, name, deadline) = self.kv_call(&bucket)?;
        Ok(store
            .expires_in(deadline, &name, &key)
            .await
            .map(|left| left.map(|left| left.as_millis().max(1) as u64))
            .map_err(to_wit))
    }
}
