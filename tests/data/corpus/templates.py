# ruff: noqa: RUF001 (the multilingual texts use full-width punctuation on purpose)
"""Marked templates of the texts people send, by category, each with its number of copies.

Markers are described in build.py. Every template is instantiated `copies`
times with different values.
"""

from __future__ import annotations

SUPPORT_TICKETS = [
    (
        "Hi, my name is ⟦name⟧ and I can't log in since yesterday. My account email is ⟦email⟧. "
        "Please call me back on ⟦phone⟧.",
        3,
    ),
    (
        "Ticket #48213 - customer ⟦name_mi⟧ reports a double charge on card ⟦card⟧. "
        "Refund requested, customer reachable at ⟦email⟧.",
        2,
    ),
    ("⟦name⟧ says the invoice PDF is blank. Reproduced on Chrome 126. Assigned to ⟦name#2⟧.", 2),
    (
        "Customer ⟦name_upper⟧ (⟦email⟧) wants to close the account and have the balance sent to "
        "IBAN ⟦iban⟧.",
        2,
    ),
    (
        "hey this is ⟦name_lower⟧, i changed my phone to ⟦phone⟧ and now 2FA codes never arrive. "
        "pls help",
        3,
    ),
    ("Escalation: ⟦first⟧'s order 1184-22 never shipped. Address on file: ⟦street⟧, ⟦city⟧.", 2),
    (
        "The user ⟦email⟧ hit error 502 three times between 10:02 and 10:14 UTC. "
        "Their IP was ⟦ip⟧ according to the WAF log.",
        2,
    ),
    ("Callback requested by ⟦name_suffix⟧ at ⟦phone⟧ regarding case 7731. Prefers mornings.", 2),
    ("Please update the billing contact to ⟦name⟧ <⟦email⟧>, effective immediately.", 2),
    (
        "Hello support, I am ⟦name⟧. I accidentally pasted my API key ⟦openai_key⟧ into a public "
        "gist, please revoke it.",
        2,
    ),
    (
        "Reporter: ⟦name⟧\nEmail: ⟦email⟧\nPhone: ⟦phone⟧\nSummary: export to CSV times out after "
        "30 s for workspaces with more than 10k rows.",
        3,
    ),
    (
        "Chargeback notice for ⟦last_first⟧, card ending in 1111, full number ⟦card⟧ on the "
        "dispute form.",
        2,
    ),
    ("⟦first⟧ from accounting cannot see the Q3 dashboard. Role is viewer, should be editor.", 2),
    (
        "Customer called from ⟦phone_uk⟧, identified as ⟦name⟧, asked to verify SSN ⟦ssn⟧ "
        "before the address change.",
        2,
    ),
    (
        "I've tried resetting my password 5 times!!! ⟦email⟧ is my login. Fix this or I cancel. "
        "-- ⟦first_upper⟧",
        2,
    ),
]

EMAILS = [
    (
        "Dear ⟦name⟧,\n\nThank you for your order. We will ship it to ⟦street⟧, ⟦city⟧ within "
        "3 business days.\n\nKind regards,\n⟦name#2⟧\nCustomer Care",
        3,
    ),
    (
        "Hi ⟦first⟧,\n\nattached is the signed contract. Let me know if ⟦first#2⟧ needs a copy.\n\n"
        "Best,\n⟦name_mi#3⟧\n⟦phone#3⟧",
        2,
    ),
    (
        "From: ⟦name⟧ <⟦email⟧>\nTo: ⟦name#2⟧ <⟦email#2⟧>\nSubject: Re: onboarding\n\n"
        "See you on ⟦date⟧ at the office.",
        3,
    ),
    (
        "Good morning ⟦first⟧, could you send the wire to ⟦iban⟧ (account holder ⟦name#2⟧)? "
        "Thanks!",
        2,
    ),
    (
        "Hello,\nmy colleague ⟦name⟧ (⟦email⟧) will take over the project while I'm away "
        "until ⟦date⟧.\nCheers, ⟦first#2⟧",
        2,
    ),
    (
        "Hi team — quick reminder that ⟦name_suffix⟧ joins us Monday. His desk phone will be "
        "⟦phone⟧.",
        2,
    ),
    (
        "Dear Mr. ⟦last⟧,\nwe could not charge your card ⟦card⟧. Please update your payment "
        "details.\nBilling team",
        2,
    ),
    ('Forwarding on behalf of ⟦name⟧: "please remove ⟦email⟧ from all mailing lists".', 2),
    (
        "Hi ⟦first⟧, the AWS key you shared (⟦aws_key⟧) is still active. Rotate it today please. "
        "— ⟦name#2⟧",
        2,
    ),
    ("⟦name⟧ wrote:\n> Can we move the call to ⟦date⟧?\nSure, works for me. ⟦first#2⟧", 2),
]

CRM_NOTES = [
    (
        "Spoke with ⟦name⟧ (VP Ops) — interested in the annual plan. Follow up ⟦date⟧. "
        "Direct line ⟦phone⟧.",
        3,
    ),
    ("Lead: ⟦name_mi⟧ | ⟦email⟧ | ⟦phone⟧ | source: webinar", 3),
    ("Account owner changed from ⟦name⟧ to ⟦name#2⟧. Old owner's email ⟦email⟧ bounces.", 2),
    ("met ⟦name_lower⟧ at the ⟦city⟧ trade show, wants a demo for 40 seats", 2),
    ("⟦last_upper⟧ GROUP — decision maker is ⟦name_upper#2⟧, email ⟦email#2⟧", 2),
    ("Note: ⟦first⟧'s assistant ⟦name#2⟧ handles scheduling; ⟦phone#2⟧ ext. 204.", 2),
    ("Renewal risk: ⟦name⟧ mentioned budget cuts. Next touchpoint ⟦date⟧.", 2),
    ("Contacts:\n- ⟦name⟧ (champion)\n- ⟦name#2⟧ (economic buyer)\n- ⟦name#3⟧ (IT, ⟦email#3⟧)", 2),
    ("Customer since ⟦date⟧, billing address ⟦street⟧, ⟦city⟧. Contact ⟦name_suffix⟧.", 2),
    ("Called ⟦phone⟧, no answer. Left voicemail for ⟦first⟧.", 2),
]

CHAT_TURNS = [
    ("can you rewrite this email to ⟦name⟧ so it sounds friendlier? her address is ⟦email⟧", 3),
    ("Summarize the thread between ⟦first⟧ and ⟦first#2⟧ about the outage.", 2),
    ("my ssn is ⟦ssn⟧, is it safe to put it on the rental application?", 2),
    ("Translate to French: 'Please call ⟦name⟧ at ⟦phone⟧ before noon.'", 2),
    ("Draft a reply to ⟦name_upper⟧ who is ANGRY that his card ⟦card⟧ was charged twice", 2),
    ("⟦email⟧ keeps getting bounced, why?", 2),
    ("new sign-in to your account from ⟦ip⟧ near ⟦city⟧ — was this you, ⟦first⟧?", 2),
    ("my social is ⟦ssn⟧ and my card is ⟦card⟧, can you check if the form is filled in right", 2),
    ("write a birthday message for ⟦first_lower⟧, she turns 30 on ⟦date⟧", 2),
    ("what does this error mean? I connected from ⟦ip⟧ and got 403", 2),
    ("Help me fill in the form: name ⟦name⟧, IBAN ⟦iban⟧, phone ⟦phone_intl⟧", 2),
    ("I'm ⟦name_mi⟧ and I need a cover letter for a data analyst role in ⟦city⟧", 2),
    ("is ⟦stripe_key⟧ a test key or a live key?", 2),
    ('⟦first⟧ said: "ping me at ⟦phone⟧ when you land" — what time is that in ⟦city⟧?', 2),
    ("Fix grammar: me and ⟦name_lower⟧ goes to the meeting tomorow", 2),
    ("ok so ⟦name_lower⟧ and ⟦name_lower#2⟧ both need access to the repo", 2),
]

MEDICAL = [
    (
        "Patient: ⟦name⟧, DOB ⟦dob⟧. Presents with persistent cough for 3 weeks. "
        "Prescribed amoxicillin 500 mg TID. Contact ⟦phone⟧.",
        3,
    ),
    ("Referral for ⟦name_mi⟧ (NHS number ⟦nhs⟧) to cardiology, ECG attached.", 2),
    (
        "Discharge summary — ⟦name_upper⟧, admitted ⟦date⟧, discharged ⟦date#2⟧. "
        "Follow-up with Dr. ⟦last#2⟧ in 2 weeks.",
        2,
    ),
    ("Mrs. ⟦last⟧ called to reschedule her MRI; new slot ⟦date⟧ 14:30. Callback ⟦phone⟧.", 2),
    (
        "⟦first⟧'s lab results: HbA1c 6.1%, LDL 130 mg/dL. Discussed diet with patient and "
        "spouse ⟦name#2⟧.",
        2,
    ),
    ("Insurance claim for ⟦name⟧, SSN ⟦ssn⟧, date of service ⟦date⟧.", 2),
    ("pt ⟦name_lower⟧ c/o headaches x2 days, bp 150/95, rx ibuprofen", 2),
    ("Emergency contact for ⟦name⟧: ⟦name#2⟧ (spouse), ⟦phone#2⟧", 2),
]

HR = [
    ("Offer letter for ⟦name⟧: start date ⟦date⟧, salary USD 98,000, manager ⟦name#2⟧.", 3),
    ("Employee ⟦name_mi⟧, SSN ⟦ssn⟧, home address ⟦street⟧, ⟦city⟧, direct deposit to ⟦iban⟧.", 2),
    (
        "Performance review: ⟦first⟧ exceeded targets in Q2. Peer feedback from ⟦name#2⟧ "
        "and ⟦name#3⟧ was positive.",
        2,
    ),
    ("Exit interview with ⟦name_suffix⟧ on ⟦date⟧. Reason: relocation to ⟦city⟧.", 2),
    ("Please add ⟦name⟧ (⟦email⟧) to payroll; DOB ⟦dob⟧.", 2),
    ("EMPLOYEE: ⟦name_upper⟧\nDEPT: FINANCE\nSSN: ⟦ssn⟧\nPHONE: ⟦phone⟧", 2),
    ("Onboarding form: social security number ⟦ssn⟧, emergency contact ⟦name#2⟧.", 2),
    ("W-4 received for ⟦name_lower⟧ — ssn:⟦ssn⟧ — filing status single", 2),
    ("Sick leave approved for ⟦last_first⟧ from ⟦date⟧ for 5 days.", 2),
    ("⟦name⟧'s background check came back clear. Reference: ⟦name#2⟧, ⟦phone#2⟧.", 2),
]

INVOICES = [
    (
        "INVOICE 2024-0193\nBill to: ⟦name⟧, ⟦street⟧, ⟦city⟧\nAmount due: EUR 1,240.00\n"
        "Pay to IBAN: ⟦iban⟧\nDue: ⟦date⟧",
        3,
    ),
    ("Receipt — paid with card ⟦card⟧ by ⟦name⟧ on ⟦date⟧. Total $84.20.", 2),
    (
        "| Item | Qty | Price |\n|---|---|---|\n| Consulting | 10 h | 1,500.00 |\n\n"
        "Invoice contact: ⟦email⟧ · ⟦phone⟧",
        2,
    ),
    ("Remittance advice: ⟦name_upper⟧ / ⟦iban⟧ / ref INV-7781", 2),
    ("Payment failed for subscriber ⟦email⟧ (card ⟦card⟧). Retrying in 3 days.", 2),
    ("Vendor: Acme Supplies Ltd.\nContact: ⟦name_mi⟧\nBank: ⟦iban⟧\nVAT: GB123456789", 2),
]

APP_LOGS = [
    (
        "2024-05-02T10:14:55.120Z INFO auth login ok user=⟦email⟧ ip=⟦ip⟧ "
        "session=3f2b9c1e-8d4a-4f6b-9e2a-7c1d5b8a9f03",
        3,
    ),
    ("[WARN] password reset requested for ⟦email⟧ from ⟦ip⟧ (attempt 3 of 5)", 2),
    (
        '{"level":"info","msg":"order created","customer":"⟦name⟧","email":"⟦email⟧",'
        '"order_id":88123,"ts":1714645200123}',
        2,
    ),
    ("ERROR payment declined card=⟦card⟧ customer_id=cus_88231 amount=4999", 2),
    ("DEBUG sending sms to ⟦phone⟧ template=otp_v2 len=6", 2),
    ("user ⟦email⟧ connected via ⟦ipv6⟧ at 2024-03-01T09:00:01+01:00", 2),
]

FORMATTING = [
    ("⟦name⟧ called about the refund.", 2),
    ("The refund request came from ⟦email⟧", 2),
    ("⟦email⟧", 2),
    ("Call ⟦phone⟧", 2),
    ("contact:⟦email⟧;backup:⟦email#2⟧", 2),
    ("tel:⟦phone⟧", 2),
    ("Owner=⟦name⟧,Phone=⟦phone⟧", 2),
    ("**Customer:** ⟦name⟧  \n**Email:** `⟦email⟧`  \n**Card:** ⟦card⟧", 2),
    ("## Attendees\n\n1. ⟦name⟧\n2. ⟦name#2⟧\n3. ⟦name_mi#3⟧\n", 2),
    ("* ⟦email⟧\n* ⟦email#2⟧\n* ⟦email#3⟧", 2),
    ('names: ["⟦name⟧", "⟦name#2⟧"]', 2),
    ("(⟦phone⟧)", 2),
    ("SSN:⟦ssn⟧", 2),
    ("IBAN:⟦iban⟧ BIC:DEUTDEFF", 2),
    ("card=⟦card⟧&exp=12/29", 2),
    ("Is this ⟦first⟧'s or ⟦first#2⟧'s laptop?", 2),
    ("⟦PERSON=Rob⟧'s ticket was reassigned to ⟦name⟧ yesterday.", 1),
    ("> ⟦name⟧ wrote on ⟦date⟧:\n> please send the files to ⟦email⟧", 2),
    ("⟦name_upper⟧", 2),
    ("cc ⟦name_lower⟧", 2),
    ("Signed, ⟦name_suffix⟧", 2),
    ("The password for the staging admin is ⟦password⟧ — change it after the demo.", 2),
    ("Use token ⟦github_token⟧ for the CI job", 2),
    ("Authorization: Bearer ⟦jwt⟧", 2),
    ("db url: postgres://app:⟦url_password⟧@db.example.com:5432/app", 2),
    ("Slack bot token is ⟦slack_token⟧, don't share", 2),
    ("aws_access_key_id=⟦aws_key⟧\naws_secret_access_key=⟦aws_secret⟧", 2),
    ("api key ⟦api_key⟧ for the weather service", 2),
]

MULTILINGUAL = [
    ("📞 ⟦phone⟧ — call ⟦first⟧ after 5pm 🙏", 2),
    ("✉️⟦email⟧✅", 2),
    ("联系人：⟦name⟧，邮箱：⟦email⟧，电话：⟦phone⟧", 2),
    ("Здравствуйте! Меня зовут ⟦name⟧, мой email ⟦email⟧.", 2),
    ("お客様 ⟦name⟧ 様のカード番号 ⟦card⟧ を確認しました。", 2),
    ("مرحبا، أنا ⟦name⟧ ورقم هاتفي ⟦phone_intl⟧", 2),
    ("Bonjour, je suis ⟦name⟧ et mon IBAN est ⟦iban⟧ 🙂", 2),
    ("🎉 Congrats ⟦first⟧!!! 🎂 party at ⟦street⟧ ⟦city⟧ on ⟦date⟧", 2),
    ("Hallo ⟦first⟧, bitte ruf mich unter ⟦phone_intl⟧ an. Grüße, ⟦name#2⟧", 2),
    ("👤⟦name⟧ 📧⟦email⟧ 💳⟦card⟧", 2),
    ("Olá ⟦first⟧! O meu email é ⟦email⟧ 😊", 2),
    ("⟦name⟧さんのメール: ⟦email⟧", 2),
]

TEMPLATES: dict[str, list[tuple[str, int]]] = {
    "support_ticket": SUPPORT_TICKETS,
    "email": EMAILS,
    "crm_note": CRM_NOTES,
    "chat": CHAT_TURNS,
    "medical": MEDICAL,
    "hr": HR,
    "invoice": INVOICES,
    "app_log": APP_LOGS,
    "formatting": FORMATTING,
    "multilingual": MULTILINGUAL,
}
