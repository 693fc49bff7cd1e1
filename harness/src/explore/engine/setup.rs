//! A schedule's workspace: made ahead (a fresh tenant and an authorization started, touching
//! nothing another schedule reads) and brought to its starting state when the schedule begins.

use super::*;

impl Engine<'_> {
    /// A fresh workspace with an authorization started (PENDING) and its consent in hand. Touches
    /// only its own workspace and counts nothing the oracles read (no code exchange, no clock
    /// move), so it can run while another schedule runs.
    pub async fn prepare(&self, start: Start) -> Result<Prepared, String> {
        let started = Instant::now();
        let name = format!("explore-{}", uuid::Uuid::new_v4().simple());
        let spec = TenantSpec {
            name,
            entitled: true,
            qbo: ConnectionStatus::NotConnected,
        };
        let t = self.target.create_tenant(&spec).await?;
        // A stale start moves the clock past every state's TTL: its flow is started when it runs.
        let consent = if start == Start::Stale {
            None
        } else {
            Some(crate::target::start_flow(self.target, t.owner, t.workspace, Provider::Qbo).await?)
        };
        Ok(Prepared {
            start,
            made_at: started,
            workspace: t,
            consent,
            took: started.elapsed(),
        })
    }

    /// Brings a prepared workspace to its starting state — completes the flow for a connected
    /// start, moves the clock past the token's expiry for a stale one — and returns its flow's
    /// consent: the one a pending start leaves for `callback`, and in every start the code whose
    /// grant the provider's counters are read for. A stale start moves the clock: it runs
    /// alone.
    pub(super) async fn finish_setup(&self, p: &Prepared) -> Result<Consent, String> {
        let consent = match &p.consent {
            Some(c) => c.clone(),
            None => {
                crate::target::start_flow(
                    self.target,
                    p.workspace.owner,
                    p.workspace.workspace,
                    Provider::Qbo,
                )
                .await?
            }
        };
        if p.start == Start::Pending {
            return Ok(consent);
        }
        crate::target::complete_flow(self.target, p.workspace.owner, Provider::Qbo, &consent)
            .await
            .map_err(|e| format!("setup: {e}"))?;
        if p.start == Start::Stale {
            self.target
                .advance_clock(Duration::from_secs(crate::model::TOKEN_TTL as u64))
                .await
                .map_err(|e| format!("setup: {e}"))?;
        }
        Ok(consent)
    }
}
