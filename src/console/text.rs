//! Every string the console shows, in one catalogue per language: English
//! and French. A struct, so a language missing a string does not compile.
//! The language is the browser's (`Accept-Language`): French when it
//! prefers `fr`, English otherwise.

pub struct Text {
    pub lang: &'static str,
    pub title: &'static str,
    pub queue: &'static str,
    pub users: &'static str,
    pub logout: &'static str,
    pub login: &'static str,
    pub name: &'static str,
    pub password: &'static str,
    pub password_again: &'static str,
    pub totp: &'static str,
    pub login_failed: &'static str,
    pub locked: &'static str,
    pub session_ended: &'static str,
    pub enrol: &'static str,
    pub enrol_code: &'static str,
    pub enrol_intro: &'static str,
    pub passwords_differ: &'static str,
    pub totp_intro: &'static str,
    pub totp_confirm: &'static str,
    pub enrolled: &'static str,
    pub queue_intro: &'static str,
    pub new_cases: &'static str,
    pub no_cases: &'static str,
    pub age: &'static str,
    pub priority: &'static str,
    pub category: &'static str,
    pub country: &'static str,
    pub network: &'static str,
    pub origin: &'static str,
    pub status: &'static str,
    pub filter: &'static str,
    pub any: &'static str,
    pub case: &'static str,
    pub urls: &'static str,
    pub urls_note: &'static str,
    pub copy: &'static str,
    pub notes: &'static str,
    pub hashes: &'static str,
    pub route: &'static str,
    pub evidence: &'static str,
    pub history: &'static str,
    pub who: &'static str,
    pub signed_by: &'static str,
    pub when: &'static str,
    pub reason: &'static str,
    pub actions: &'static str,
    pub move_to: &'static str,
    pub agency: &'static str,
    pub reference: &'static str,
    pub final_status: &'static str,
    pub not_worked_here: &'static str,
    pub role: &'static str,
    pub state: &'static str,
    pub failures: &'static str,
    pub locked_until: &'static str,
    pub last_login: &'static str,
    pub add_user: &'static str,
    pub disable: &'static str,
    pub reset: &'static str,
    pub unlock: &'static str,
    pub enrolment_for: &'static str,
    pub valid_until: &'static str,
    pub forbidden: &'static str,
    pub not_found: &'static str,
    pub refused: &'static str,
    pub flags: &'static str,
}

pub const EN: Text = Text {
    lang: "en",
    title: "alertrelay console",
    queue: "Queue",
    users: "Users",
    logout: "Log out",
    login: "Log in",
    name: "Name",
    password: "Password",
    password_again: "Password again",
    totp: "Code from your authenticator app",
    login_failed: "Name, password or code is wrong.",
    locked: "This account is locked after repeated failures. Try again later or ask an admin to unlock it.",
    session_ended: "Your session ended. Please log in again.",
    enrol: "Enrol",
    enrol_code: "Enrolment code",
    enrol_intro: "Choose a password of at least 12 characters. Next you will set up your authenticator app.",
    passwords_differ: "The two passwords differ.",
    totp_intro: "Scan this QR code with your authenticator app (or enter the key by hand), then type the code it shows.",
    totp_confirm: "Confirm",
    enrolled: "Your account is ready. Log in with your password and a code from your app.",
    queue_intro: "Incoming cases waiting for this hotline: urgent first, then oldest.",
    new_cases: "new",
    no_cases: "No cases.",
    age: "Age",
    priority: "Priority",
    category: "Category",
    country: "Hosting country",
    network: "Network",
    origin: "Origin",
    status: "Status",
    filter: "Filter",
    any: "any",
    case: "Case",
    urls: "URLs",
    urls_note: "Defanged: never opened, fetched or previewed by the console.",
    copy: "Copy",
    notes: "Notes",
    hashes: "Hashes",
    route: "Route",
    evidence: "Evidence",
    history: "Signed status history",
    who: "Who",
    signed_by: "Signed by",
    when: "When",
    reason: "Reason",
    actions: "Actions",
    move_to: "Move to",
    agency: "Agency",
    reference: "Reference",
    final_status: "This case has a final status.",
    not_worked_here: "This case is worked by another hotline.",
    role: "Role",
    state: "State",
    failures: "Failures",
    locked_until: "Locked until",
    last_login: "Last login",
    add_user: "Add user",
    disable: "Disable",
    reset: "Reset",
    unlock: "Unlock",
    enrolment_for: "Enrolment code for",
    valid_until: "valid once, until",
    forbidden: "Your role may not open this page.",
    not_found: "Not found.",
    refused: "Refused",
    flags: "Flags",
};

pub const FR: Text = Text {
    lang: "fr",
    title: "console alertrelay",
    queue: "File d'attente",
    users: "Utilisateurs",
    logout: "Se déconnecter",
    login: "Se connecter",
    name: "Nom",
    password: "Mot de passe",
    password_again: "Mot de passe (bis)",
    totp: "Code de votre application d'authentification",
    login_failed: "Nom, mot de passe ou code incorrect.",
    locked: "Ce compte est verrouillé après des échecs répétés. Réessayez plus tard ou demandez à un administrateur de le déverrouiller.",
    session_ended: "Votre session a pris fin. Veuillez vous reconnecter.",
    enrol: "Inscription",
    enrol_code: "Code d'inscription",
    enrol_intro: "Choisissez un mot de passe d'au moins 12 caractères. Vous configurerez ensuite votre application d'authentification.",
    passwords_differ: "Les deux mots de passe diffèrent.",
    totp_intro: "Scannez ce code QR avec votre application d'authentification (ou saisissez la clé), puis tapez le code affiché.",
    totp_confirm: "Confirmer",
    enrolled: "Votre compte est prêt. Connectez-vous avec votre mot de passe et un code de votre application.",
    queue_intro: "Dossiers entrants en attente pour cette hotline : urgents d'abord, puis les plus anciens.",
    new_cases: "nouveaux",
    no_cases: "Aucun dossier.",
    age: "Âge",
    priority: "Priorité",
    category: "Catégorie",
    country: "Pays d'hébergement",
    network: "Réseau",
    origin: "Origine",
    status: "Statut",
    filter: "Filtrer",
    any: "tous",
    case: "Dossier",
    urls: "URL",
    urls_note: "Désactivées : jamais ouvertes, téléchargées ni prévisualisées par la console.",
    copy: "Copier",
    notes: "Notes",
    hashes: "Empreintes",
    route: "Acheminement",
    evidence: "Éléments",
    history: "Historique signé des statuts",
    who: "Qui",
    signed_by: "Signé par",
    when: "Quand",
    reason: "Motif",
    actions: "Actions",
    move_to: "Passer à",
    agency: "Service",
    reference: "Référence",
    final_status: "Ce dossier a un statut final.",
    not_worked_here: "Ce dossier est traité par une autre hotline.",
    role: "Rôle",
    state: "État",
    failures: "Échecs",
    locked_until: "Verrouillé jusqu'à",
    last_login: "Dernière connexion",
    add_user: "Ajouter un utilisateur",
    disable: "Désactiver",
    reset: "Réinitialiser",
    unlock: "Déverrouiller",
    enrolment_for: "Code d'inscription pour",
    valid_until: "valable une fois, jusqu'au",
    forbidden: "Votre rôle ne permet pas d'ouvrir cette page.",
    not_found: "Introuvable.",
    refused: "Refusé",
    flags: "Signalements",
};

/// The catalogue for an `Accept-Language` header: the first language it
/// names that the console has (by quality order as sent), else English.
pub fn for_accept_language(header: Option<&str>) -> &'static Text {
    let Some(h) = header else { return &EN };
    let mut langs: Vec<(f32, &str)> = h
        .split(',')
        .filter_map(|part| {
            let mut it = part.trim().split(';');
            let tag = it.next()?.trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            Some((q, tag))
        })
        .collect();
    langs.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, tag) in langs {
        let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
        match primary.as_str() {
            "fr" => return &FR,
            "en" => return &EN,
            _ => {}
        }
    }
    &EN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_language_chooses_the_catalogue() {
        assert_eq!(
            for_accept_language(Some("fr-FR,fr;q=0.9,en;q=0.8")).lang,
            "fr"
        );
        assert_eq!(
            for_accept_language(Some("de-DE,en;q=0.5,fr;q=0.4")).lang,
            "en"
        );
        assert_eq!(for_accept_language(Some("de, fr;q=0.7")).lang, "fr");
        assert_eq!(for_accept_language(None).lang, "en");
    }
}
