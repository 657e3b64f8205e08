//! MQTT 5.0 reason codes (spec §2.4), one enum for every packet that carries
//! one: CONNACK, PUBACK/PUBREC/PUBREL/PUBCOMP, SUBACK, UNSUBACK, DISCONNECT
//! and AUTH.
//!
//! The wire structs keep a plain `u8` (a peer may send any byte, and a
//! packet decoded from a client must round-trip unchanged); code that
//! *chooses* a reason names it here and converts with [`ReasonCode::code`]
//! or `u8::from`. Three codes share the value 0x00 (Success, Normal
//! disconnection, Granted QoS 0); the enum names it [`ReasonCode::Success`]
//! and the other two are associated constants.

/// An MQTT 5.0 reason code. Values below 0x80 report success, 0x80 and
/// above failure [MQTT-2.4].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00 Success (also Normal disconnection, Granted QoS 0).
    Success = 0x00,
    /// 0x01 Granted QoS 1 (SUBACK).
    GrantedQoS1 = 0x01,
    /// 0x02 Granted QoS 2 (SUBACK).
    GrantedQoS2 = 0x02,
    /// 0x04 Disconnect with Will Message (DISCONNECT from a client).
    DisconnectWithWill = 0x04,
    /// 0x10 No matching subscribers (PUBACK, PUBREC).
    NoMatchingSubscribers = 0x10,
    /// 0x11 No subscription existed (UNSUBACK).
    NoSubscriptionExisted = 0x11,
    /// 0x18 Continue authentication (AUTH).
    ContinueAuthentication = 0x18,
    /// 0x19 Re-authenticate (AUTH from a client).
    ReAuthenticate = 0x19,
    /// 0x80 Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81 Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82 Protocol Error.
    ProtocolError = 0x82,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84 Unsupported Protocol Version (CONNACK).
    UnsupportedProtocolVersion = 0x84,
    /// 0x85 Client Identifier not valid (CONNACK).
    ClientIdentifierNotValid = 0x85,
    /// 0x86 Bad User Name or Password (CONNACK).
    BadUserNameOrPassword = 0x86,
    /// 0x87 Not authorized.
    NotAuthorized = 0x87,
    /// 0x88 Server unavailable (CONNACK).
    ServerUnavailable = 0x88,
    /// 0x89 Server busy.
    ServerBusy = 0x89,
    /// 0x8A Banned (CONNACK).
    Banned = 0x8a,
    /// 0x8B Server shutting down (DISCONNECT).
    ServerShuttingDown = 0x8b,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod = 0x8c,
    /// 0x8D Keep Alive timeout (DISCONNECT).
    KeepAliveTimeout = 0x8d,
    /// 0x8E Session taken over (DISCONNECT).
    SessionTakenOver = 0x8e,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid = 0x8f,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93 Receive Maximum exceeded (DISCONNECT).
    ReceiveMaximumExceeded = 0x93,
    /// 0x94 Topic Alias invalid (DISCONNECT).
    TopicAliasInvalid = 0x94,
    /// 0x95 Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96 Message rate too high (DISCONNECT).
    MessageRateTooHigh = 0x96,
    /// 0x97 Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98 Administrative action (DISCONNECT).
    AdministrativeAction = 0x98,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A Retain not supported.
    RetainNotSupported = 0x9a,
    /// 0x9B QoS not supported.
    QoSNotSupported = 0x9b,
    /// 0x9C Use another server.
    UseAnotherServer = 0x9c,
    /// 0x9D Server moved.
    ServerMoved = 0x9d,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9e,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded = 0x9f,
    /// 0xA0 Maximum connect time (DISCONNECT).
    MaximumConnectTime = 0xa0,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xa1,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xa2,
}

impl ReasonCode {
    /// 0x00 in a DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 in a SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether the code reports a failure (0x80 and above).
    pub const fn is_error(self) -> bool {
        Self::is_error_code(self.code())
    }

    /// Whether a wire byte reports a failure (0x80 and above), whether or
    /// not the spec defines it.
    pub const fn is_error_code(code: u8) -> bool {
        code >= 0x80
    }

    /// The code for a wire byte, `None` for a value the spec does not define.
    pub fn from_code(code: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        const ALL: [ReasonCode; 43] = [
            Success,
            GrantedQoS1,
            GrantedQoS2,
            DisconnectWithWill,
            NoMatchingSubscribers,
            NoSubscriptionExisted,
            ContinueAuthentication,
            ReAuthenticate,
            UnspecifiedError,
            MalformedPacket,
            ProtocolError,
            ImplementationSpecificError,
            UnsupportedProtocolVersion,
            ClientIdentifierNotValid,
            BadUserNameOrPassword,
            NotAuthorized,
            ServerUnavailable,
            ServerBusy,
            Banned,
            ServerShuttingDown,
            BadAuthenticationMethod,
            KeepAliveTimeout,
            SessionTakenOver,
            TopicFilterInvalid,
            TopicNameInvalid,
            PacketIdentifierInUse,
            PacketIdentifierNotFound,
            ReceiveMaximumExceeded,
            TopicAliasInvalid,
            PacketTooLarge,
            MessageRateTooHigh,
            QuotaExceeded,
            AdministrativeAction,
            PayloadFormatInvalid,
            RetainNotSupported,
            QoSNotSupported,
            UseAnotherServer,
            ServerMoved,
            SharedSubscriptionsNotSupported,
            ConnectionRateExceeded,
            MaximumConnectTime,
            SubscriptionIdentifiersNotSupported,
            WildcardSubscriptionsNotSupported,
        ];
        ALL.into_iter().find(|r| r.code() == code)
    }

    /// The granted-QoS code of a SUBACK for `qos`.
    pub const fn granted(qos: super::QoS) -> ReasonCode {
        match qos {
            super::QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
            super::QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            super::QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code nearest to a 5.0 CONNACK reason
    /// (3.1.1 §3.2.2.3: 1 unacceptable protocol version, 2 identifier
    /// rejected, 3 server unavailable, 4 bad user name or password, 5 not
    /// authorized).
    pub fn v4_connack_code(code: u8) -> u8 {
        match ReasonCode::from_code(code) {
            Some(ReasonCode::Success) => 0,
            Some(ReasonCode::UnsupportedProtocolVersion) => 1,
            Some(ReasonCode::ClientIdentifierNotValid) => 2,
            Some(ReasonCode::BadUserNameOrPassword | ReasonCode::BadAuthenticationMethod) => 4,
            Some(ReasonCode::NotAuthorized) => 5,
            _ => 3,
        }
    }

    /// The MQTT 3.1.1 SUBACK return code for a 5.0 SUBACK reason: the
    /// granted QoS, or 0x80 Failure.
    pub fn v4_suback_code(code: u8) -> u8 {
        if code < 0x80 { code } else { 0x80 }
    }
}

impl From<ReasonCode> for u8 {
    fn from(r: ReasonCode) -> u8 {
        r.code()
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02X} {:?}", self.code(), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_unknown_bytes_are_none() {
        let mut known = 0;
        for b in 0..=u8::MAX {
            if let Some(r) = ReasonCode::from_code(b) {
                assert_eq!(r.code(), b);
                assert_eq!(r.is_error(), b >= 0x80);
                known += 1;
            }
        }
        assert_eq!(known, 43);
        assert_eq!(ReasonCode::from_code(0x03), None);
    }

    #[test]
    fn v4_mappings() {
        assert_eq!(ReasonCode::v4_connack_code(0x84), 1);
        assert_eq!(ReasonCode::v4_connack_code(0x8c), 4);
        assert_eq!(ReasonCode::v4_connack_code(0x97), 3);
        assert_eq!(ReasonCode::v4_suback_code(0x01), 1);
        assert_eq!(ReasonCode::v4_suback_code(0x87), 0x80);
    }
}
