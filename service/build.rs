//! `sqlx::migrate!` embeds `migrations/` in the binary when the crate compiles; without this, a
//! migration added (or edited) after the last build would not rebuild the crate, and the binary
//! would migrate to the old schema.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
