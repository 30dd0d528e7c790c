//! The losses of FashionViL's six pretext tasks.
//!
//! Each task turns a [`PretextBatch`] into a scalar loss with the model; the
//! batch carries only what its task needs (built by the data pipeline).

use tch::nn::Module;
use tch::{Kind, Tensor};

use crate::data::{ItcBank, PretextBatch};
use crate::losses::{
    bank_softmax, hardest_negatives, in_batch_softmax, info_nce, itm, masked_cross_entropy, pac, positions, twin_pairs, IGNORE,
};
use crate::model::fashionvil::FashionVil;
use crate::schedule::Task;

fn part<'a>(value: &'a Option<Tensor>, task: Task, name: &str) -> &'a Tensor {
    value.as_ref().unwrap_or_else(|| panic!("a {} batch needs {name}", task.name()))
}

impl FashionVil {
    /// Visual tokens of the batch's images (through the image encoder when the
    /// model has one, else the images are cached maps).
    fn tokens_of(&self, images: &Tensor, train: bool) -> Tensor {
        let features = if self.image_encoder.is_some() { self.image_features(images, train) } else { self.cached_features(images) };
        self.visual_tokens(&features)
    }

    /// The loss of the batch's task; with `bank` (frozen features), ITC scores
    /// each text against every example's image, its text twins left out.
    pub fn pretext_loss(&self, batch: &PretextBatch, bank: Option<&ItcBank>, train: bool) -> Tensor {
        let task = batch.task;
        let tokens = self.tokens_of(&batch.images, train);
        let (b, v) = (tokens.size()[0], tokens.size()[1]);
        let all_visual = Tensor::ones([b, v], (Kind::Int64, tokens.device()));
        match task {
            Task::Itc => {
                let text = self.text_embedding(&batch.ids, &batch.text_mask, train);
                match bank {
                    Some(bank) => {
                        let images = self.pooled_image_embedding(&bank.features);
                        let twins = twin_pairs(&batch.positions, &bank.text_twins);
                        let text_to_image = bank_softmax(&text, &images, &batch.positions, &twins);
                        // With a trained image tail the batch's images are embedded live, so
                        // the tail learns from the in-batch half; the bank softmax keeps the
                        // snapshot alone (live columns among snapshot ones could be told apart
                        // by their age rather than their content).
                        let batch_images = match self.image_tail {
                            Some(_) => self.image_embedding(&tokens),
                            None => images.index_select(0, &positions(batch.positions.iter().copied(), text.device())),
                        };
                        (text_to_image + in_batch_softmax(&batch_images, &text)) / 2.0
                    }
                    None => info_nce(&self.image_embedding(&tokens), &text),
                }
            }
            Task::Mvc => {
                let image = self.image_embedding(&tokens);
                let second = self.tokens_of(part(&batch.second_view, task, "second_view"), train);
                let visual_mask = part(&batch.mvc_visual_mask, task, "mvc_visual_mask");
                let (_, fused) = self.fuse(&batch.ids, part(&batch.mvc_text_mask, task, "mvc_text_mask"), &second, visual_mask, train);
                info_nce(&image, &self.fused_visual_embedding(&fused, visual_mask))
            }
            Task::Itm => {
                let image = self.image_embedding(&tokens);
                let text = self.text_embedding(&batch.ids, &batch.text_mask, train);
                // The second half of the batch gets the hardest wrong text.
                let wrong = hardest_negatives(&image.matmul(&text.tr()));
                let half = b / 2;
                let order = Tensor::cat(&[Tensor::arange(b - half, (Kind::Int64, tokens.device())), wrong.narrow(0, b - half, half)], 0);
                let labels = Tensor::cat(
                    &[Tensor::ones([b - half], (Kind::Int64, tokens.device())), Tensor::zeros([half], (Kind::Int64, tokens.device()))],
                    0,
                );
                let ids = batch.ids.index_select(0, &order);
                let mask = batch.text_mask.index_select(0, &order);
                let (text_out, _) = self.fuse(&ids, &mask, &tokens, &all_visual, train);
                itm(&self.itm_head.forward(&self.pooled(&text_out)), &labels)
            }
            Task::Mlm => {
                let ids = part(&batch.mlm_ids, task, "mlm_ids");
                let (text_out, _) = self.fuse(ids, &batch.text_mask, &tokens, &all_visual, train);
                let h = text_out.size()[2];
                // The vocabulary-sized decoder runs only where a token is masked
                // (about 15% of positions), not over every position.
                let labels = part(&batch.mlm_labels, task, "mlm_labels").reshape([-1]);
                let at = labels.ne(IGNORE).nonzero().squeeze_dim(1);
                let hidden = text_out.reshape([-1, h]).index_select(0, &at);
                let word_embeddings = &self.fusion_bert().embeddings.word_embeddings.ws;
                let logits = self.mlm_head.forward(&hidden, word_embeddings);
                masked_cross_entropy(&logits, &labels.index_select(0, &at))
            }
            Task::Mpfc => {
                let masked = part(&batch.mpfc_mask, task, "mpfc_mask");
                // Masked patches are zeroed.
                let keep = (masked.eq(0)).to_kind(tokens.kind()).unsqueeze(-1);
                let (_, visual_out) = self.fuse(&batch.ids, &batch.text_mask, &(&tokens * keep), &all_visual, train);
                let h = visual_out.size()[2];
                let logits = self.mpfc_head.forward(&visual_out.reshape([-1, h]));
                masked_cross_entropy(&logits, &part(&batch.mpfc_labels, task, "mpfc_labels").reshape([-1]))
            }
            Task::Pac => {
                let targets = part(&batch.pac_targets, task, "pac_targets");
                let image = self.image_embedding(&tokens);
                let text = self.text_embedding(&batch.ids, &batch.text_mask, train);
                let scale = self.config.pac_scale;
                (pac(&image, &self.pac_weights, scale, targets) + pac(&text, &self.pac_weights, scale, targets)) / 2.0
            }
        }
    }
}
