//! nf_tables ruleset notifications, as far as refract reads them: whether a
//! message on the `NFNLGRP_NFTABLES` multicast group says that a rule, a
//! chain or a table was deleted (the DROP rule may have gone with it).
//!
//! iptables-nft, `nft` and every `iptables-restore` change the ruleset
//! through nf_tables, which announces each change to that group
//! (`nf_tables_rule_notify()` and friends in `net/netfilter/nf_tables_api.c`).
//! Only the message type is read: decoding the rule itself would mean
//! decoding iptables-nft's xt-compat expressions, and a deletion of
//! anything is reason enough to check our rules again.

use crate::nl::consts::NFNL_SUBSYS_NFTABLES;
use crate::nl::msg::Msg;

// ---- /usr/include/linux/netfilter/nf_tables.h (`enum nf_tables_msg_types`) ----

pub const NFT_MSG_DELTABLE: u16 = 2;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_DELRULE: u16 = 8;

/// Whether `msg` (a notification of subsystem `NFNL_SUBSYS_NFTABLES`,
/// type `subsys << 8 | msg`) deletes a table, a chain or a rule.
pub fn is_deletion(msg: &Msg<'_>) -> bool {
    msg.ty >> 8 == NFNL_SUBSYS_NFTABLES
        && matches!(
            msg.ty & 0xff,
            NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::consts::{nfnl_msg_type, NFNL_SUBSYS_IPSET};

    fn msg(ty: u16) -> Msg<'static> {
        Msg {
            ty,
            flags: 0,
            seq: 0,
            pid: 0,
            payload: &[],
        }
    }

    #[test]
    fn deletions_of_nf_tables_objects_only() {
        for cmd in [NFT_MSG_DELTABLE, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE] {
            assert!(is_deletion(&msg(nfnl_msg_type(
                NFNL_SUBSYS_NFTABLES,
                cmd as u8
            ))));
        }
        // NFT_MSG_NEWRULE (6), NFT_MSG_NEWGEN (15): additions are no loss.
        for cmd in [6u8, 15] {
            assert!(!is_deletion(&msg(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, cmd))));
        }
        // The same command number of another subsystem.
        assert!(!is_deletion(&msg(nfnl_msg_type(NFNL_SUBSYS_IPSET, 8))));
    }
}
